"""The SemanticSeg-style corpus: real text from registry packages, with hierarchical gold boundaries."""
