"""Sweave/LaTeX source reduced to the text a reader sees (``datamodules.corpus.sources.r_vignettes`` renders R
packages' vignettes with it): macros expanded, sections numbered and marked, references and citations printed,
code and mathematics held verbatim while the rest is rewritten. The rules are listed in that module's docstring."""

from __future__ import annotations

import re
import unicodedata

HOLD_OPEN, HOLD_CLOSE = "\ue000", "\ue001"  # a protected piece (math, code) while the text is rendered
HEADING_MARK = "\ue002"  # a heading line: HEADING_MARK, its level digit, its text
COMPUTED = "\ue003"  # where \\Sexpr{} was: a value computed when the paper is built, printed as nothing
CHUNK_START = re.compile(r"\s*<<(.*)>>=\s*")
CHUNK_END = re.compile(r"@(\s.*)?")
HIDDEN_CHUNK = re.compile(r"\b(?:echo|include)\s*=\s*(?:FALSE|F)\b")
VERBATIM = ("verbatim", "Verbatim", "Sinput", "Soutput", "Scode", "Code", "CodeInput", "CodeOutput", "alltt",
            "lstlisting")
CONTAINERS = ("Schunk", "CodeChunk")  # wrappers of verbatim environments: print nothing themselves
MATH_ENVS = ("equation", "eqnarray", "align", "gather", "multline", "displaymath", "math", "alignat", "flalign")
MULTI_ROW = ("eqnarray", "align", "gather", "alignat", "flalign")
DROPPED_ENVS = ("figure", "table", "sidewaysfigure", "sidewaystable", "tabular", "tabularx", "longtable",
                "thebibliography", "comment", "minipage", "picture", "tikzpicture")
SECTIONS = {"section": 0, "subsection": 1, "subsubsection": 2, "paragraph": 2}
DROP_WITH_ARGUMENT = {
    "label", "vspace", "hspace", "setkeys", "SweaveOpts", "Sexpr", "bibliographystyle", "bibliography", "input",
    "include", "usepackage", "pagestyle", "thispagestyle", "addcontentsline", "setlength", "addtolength",
    "setcounter", "addtocounter", "phantom", "hypersetup", "VignetteIndexEntry", "VignetteDepends",
    "VignetteKeywords", "VignettePackage", "VignetteEngine", "VignetteEncoding", "pdfbookmark", "nocite",
    "includegraphics", "graphicspath", "DeclareGraphicsExtensions", "newenvironment", "renewenvironment",
    "newtheorem", "definecolor", "color", "fontsize", "vskip", "rule", "linewidth", "textwidth", "author", "date",
    "thanks", "Plainauthor", "Plaintitle", "Shorttitle", "Address", "Keywords", "Plainkeywords", "bibpunct",
}
NAMED = {"LaTeX": "LaTeX", "TeX": "TeX", "ldots": "...", "dots": "...", "ss": "ß", "o": "ø", "O": "Ø",
         "aa": "å", "AA": "Å", "ae": "æ", "AE": "Æ", "oe": "œ", "l": "ł", "S": "§", "copyright": "©",
         "textbar": "|", "textbackslash": "\\", "textasciitilde": "~", "slash": "/", "i": "i", "LaTeXe": "LaTeX2e"}
ACCENTS = {'"': "\u0308", "'": "\u0301", "`": "\u0300", "^": "\u0302", "~": "\u0303", "=": "\u0304",
           ".": "\u0307", "c": "\u0327", "v": "\u030c", "u": "\u0306", "H": "\u030b"}
ROMAN_APPENDIX = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def braced(text: str, start: int) -> tuple[str, int] | None:
    """The content of the brace group opening at ``text[start]`` (after spaces) and the index after it."""
    i = start
    while i < len(text) and text[i] in " \t\n":
        i += 1
    if i >= len(text) or text[i] != "{":
        return None
    depth = 0
    for j in range(i, len(text)):
        c = text[j]
        if c == "\\":
            continue
        if c == "{" and text[j - 1] != "\\":
            depth += 1
        elif c == "}" and text[j - 1] != "\\":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j], j + 1
    return None


def optional(text: str, start: int) -> tuple[str | None, int]:
    """An optional ``[...]`` argument at ``start`` (no nesting of brackets), or (None, start)."""
    m = re.match(r"\s*\[([^\[\]]*)\]", text[start:])
    return (m[1], start + m.end()) if m else (None, start)


# --- line pass: code chunks, verbatim blocks, comments ---------------------------------------------------


def protect_lines(source: str, held: list[str]) -> str:
    """Code chunks and verbatim blocks become held pieces (hidden chunks vanish); comments go."""
    out: list[str] = []
    lines = source.replace("\r\n", "\n").splitlines(keepends=True)
    i = 0
    while i < len(lines):
        line = lines[i]
        chunk = CHUNK_START.fullmatch(line.rstrip("\n"))
        env = re.match(r"\s*\\begin\{(" + "|".join(VERBATIM) + r")\*?\}", line)
        if chunk or env:
            end = re.compile(r"\s*\\end\{" + re.escape(env[1]) + r"\*?\}") if env else CHUNK_END
            j = i + 1
            while j < len(lines) and not end.match(lines[j]):
                j += 1
            body = "".join(lines[i + 1 : j]).strip("\n")
            if body.strip() and not (chunk and HIDDEN_CHUNK.search(chunk[1])):
                held.append(body + "\n")
                out.append(f"\n{HOLD_OPEN}{len(held) - 1}{HOLD_CLOSE}\n\n")
            i = j + 1
            continue
        if re.match(r"\s*\\(?:begin|end)\{(?:" + "|".join(CONTAINERS) + r")\}", line):
            i += 1
            continue
        stripped = re.sub(r"(?<!\\)((?:\\\\)*)%.*", r"\1", line.rstrip("\n"))
        if stripped != line.rstrip("\n") and not stripped.strip():
            i += 1  # a comment line: gone, and no paragraph break either
            continue
        out.append(stripped + ("\n" if line.endswith("\n") else ""))
        i += 1
    return "".join(out)


# --- macros ------------------------------------------------------------------------------------------------


def collect_macros(text: str) -> tuple[dict[str, tuple[int, str]], str]:
    """The document's own macros (name -> (arguments, body)) and the text without their definitions."""
    macros: dict[str, tuple[int, str]] = {}
    pieces: list[str] = []
    pos = 0
    for m in re.finditer(r"\\(?:re|provide)?newcommand\*?\s*(?:\{\\([a-zA-Z]+)\}|\\([a-zA-Z]+))", text):
        if m.start() < pos:
            continue
        n_args, after = optional(text, m.end())
        default, after = optional(text, after)
        body = braced(text, after)
        if body is None:
            continue
        macros[m[1] or m[2]] = (int(n_args) if n_args and n_args.isdigit() else 0, body[0])
        pieces.append(text[pos : m.start()])
        pos = body[1]
    pieces.append(text[pos:])
    text = "".join(pieces)
    for m in re.finditer(r"\\let\s*\\([a-zA-Z]+)\s*=?\s*\\([a-zA-Z]+)", text):
        macros[m[1]] = (-1, m[2])  # an alias of another command
    text = re.sub(r"\\let\s*\\[a-zA-Z]+\s*=?\s*\\[a-zA-Z]+", "", text)
    text = re.sub(r"\\def\s*\\[a-zA-Z]+[^{]*", "", text)
    return macros, text


def expand_macros(text: str, macros: dict[str, tuple[int, str]], rounds: int = 4) -> str:
    if not macros:
        return text
    pattern = re.compile(r"\\(" + "|".join(sorted(map(re.escape, macros), key=len, reverse=True)) + r")(?![a-zA-Z])")
    for _ in range(rounds):
        out, pos, changed = [], 0, False
        for m in pattern.finditer(text):
            if m.start() < pos:
                continue
            n_args, body = macros[m[1]]
            if n_args < 0:  # \let alias
                out.append(text[pos : m.start()] + "\\" + body)
                pos, changed = m.end(), True
                continue
            args, after = [], m.end()
            for _ in range(n_args):
                group = braced(text, after)
                if group is None:
                    break
                args.append(group[0])
                after = group[1]
            if len(args) < n_args:
                continue
            for k, arg in enumerate(args, 1):
                body = body.replace(f"#{k}", arg)
            out.append(text[pos : m.start()] + body + (" " if n_args == 0 and text[after : after + 1].isalpha() else ""))
            pos, changed = after, True
        out.append(text[pos:])
        text = "".join(out)
        if not changed:
            break
    return text


# --- numbers of sections, equations, figures and tables -----------------------------------------------------


def number_labels(body: str) -> dict[str, str]:
    """label -> the number LaTeX would print for it (section, equation, figure or table)."""
    labels: dict[str, str] = {}
    counters = [0, 0, 0]
    appendix = False
    equation = 0
    floats = {"figure": 0, "table": 0}
    current = ""
    token = re.compile(
        r"\\(section|subsection|subsubsection)(\*)?|\\appendix\b|\\begin\{appendix\}"
        r"|\\begin\{(" + "|".join(MATH_ENVS) + r"|figure|table|sidewaysfigure|sidewaystable)(\*?)\}|\\label\{([^}]*)\}"
    )
    pos = 0
    while m := token.search(body, pos):
        pos = m.end()
        if m[1]:
            if m[2]:
                continue
            depth = ("section", "subsection", "subsubsection").index(m[1])
            counters[depth] += 1
            counters[depth + 1 :] = [0] * (2 - depth)
            first = ROMAN_APPENDIX[(counters[0] - 1) % 26] if appendix else str(counters[0])
            current = ".".join([first, *map(str, counters[1 : depth + 1])])
        elif m[0].startswith(("\\appendix", "\\begin{appendix}")):
            appendix, counters = True, [0, 0, 0]
        elif m[3]:
            env, starred = m[3], m[4]
            end = body.find(f"\\end{{{env}{starred}}}", pos)
            end = len(body) if end < 0 else end
            content = body[pos:end]
            pos = end
            if env in ("figure", "table", "sidewaysfigure", "sidewaystable"):
                kind = "figure" if "figure" in env else "table"
                floats[kind] += 1
                for label in re.findall(r"\\label\{([^}]*)\}", content):
                    labels[label] = str(floats[kind])
                continue
            if env in ("displaymath", "math"):
                continue
            rows = re.split(r"\\\\", content) if env in MULTI_ROW else [content]
            for row in rows:
                numbered = not starred and not re.search(r"\\(?:nonumber|notag)\b", row) and row.strip()
                if numbered:
                    equation += 1
                for label in re.findall(r"\\label\{([^}]*)\}", row):
                    labels[label] = str(equation)
        elif m[5]:
            labels.setdefault(m[5], current)
    return labels


# --- rendering ----------------------------------------------------------------------------------------------


def _hold(held: list[str], text: str) -> str:
    held.append(text)
    return f"{HOLD_OPEN}{len(held) - 1}{HOLD_CLOSE}"


CODE_COMMANDS = ("code", "texttt", "samp", "file", "fct", "Robject", "Rcmd", "Rfunction", "Rclass", "Rarg",
                 "Roperator", "Rlevel", "command", "env", "option", "kbd")
TWO_ARGUMENTS = re.compile(r"\\(?:setkeys|setlength|addtolength|setcounter|addtocounter|definecolor)\s*\{[^{}]*\}"
                           r"(?:\s*\{[^{}]*\})+")


def plain_code(code: str) -> str:
    """Inline code as printed: escapes undone, nested text commands reduced to their argument, ``~`` kept."""
    for _ in range(4):
        code = re.sub(r"\\[a-zA-Z]+\s*\{([^{}]*)\}", r"\1", code)
    code = re.sub(r"\\(?:textbackslash|char`\\\\)\s?", "\\\\", code)
    code = re.sub(r"\\(?:textasciitilde|char`~)\s?", "~", code)
    code = re.sub(r"\\(?:textasciicircum|char`\\^)\s?", "^", code)
    code = re.sub(r"\\l?dots\b\s?", "...", code)
    return re.sub(r"\\([%&_#${} ])", r"\1", code)


def protect_code(text: str, held: list[str]) -> str:
    """Inline code (``\\code{x$y}``, ``\\verb|x|``) printed and held, so its ``$`` and braces are not markup."""
    text = re.sub(r"\\verb\*?([^a-zA-Z\s])(.*?)\1", lambda m: _hold(held, m[2]), text)
    pattern = re.compile(r"\\(" + "|".join(CODE_COMMANDS) + r")(?![a-zA-Z])")
    out, pos = [], 0
    for m in pattern.finditer(text):
        if m.start() < pos:
            continue
        group = braced(text, m.end())
        if group is None:
            continue
        code = plain_code(group[0])
        out.append(text[pos : m.start()] + _hold(held, code + ("()" if m[1] == "fct" else "")))
        pos = group[1]
    out.append(text[pos:])
    return "".join(out)


def protect_math(text: str, held: list[str]) -> str:
    envs = "|".join(MATH_ENVS)
    display = re.compile(r"\\begin\{(" + envs + r")(\*?)\}.*?\\end\{\1\2\}", re.S)

    def keep(m: re.Match) -> str:
        math = re.sub(r"\s*\\label\{[^}]*\}", "", m[0])
        if not re.sub(r"[$\s]|\\[\[\]()]", "", math.replace(COMPUTED, "")):  # only a computed value: nothing
            return ""
        return _hold(held, math.replace(COMPUTED, ""))

    text = display.sub(keep, text)
    text = re.sub(r"\$\$(?!\s*\$).*?\$\$|\\\[.*?\\\]|\\\(.*?\\\)", keep, text, flags=re.S)
    return re.sub(r"(?<!\\)\$(?:\\.|[^$\\\n]|\n(?![ \t]*\n))+\$", keep, text)  # inline, within a paragraph


def drop_environments(text: str) -> str:
    for env in DROPPED_ENVS:
        text = re.sub(r"\\begin\{" + env + r"\*?\}.*?\\end\{" + env + r"\*?\}", "\n\n", text, flags=re.S)
    return text


def _cite(m: re.Match) -> str:
    keys = "; ".join(k.strip() for k in m[4].split(",") if k.strip())
    pre, post = (m[2] or "").strip(), (m[3] or "").strip()
    if m[3] is None and m[2] is not None:  # one optional argument is the note after
        pre, post = "", pre
    inner = " ".join(p for p in (pre, keys) if p) + (f", {post}" if post else "")
    return f"({inner})" if m[1] in ("citep", "parencite") else inner  # natbib: \\cite is textual


def render_inline(text: str, labels: dict[str, str]) -> str:
    """Text commands to their printed text (held pieces untouched)."""
    text = re.sub(r"\\(cite[a-z]*)\*?\s*(?:\[([^\]]*)\])?\s*(?:\[([^\]]*)\])?\s*\{([^}]*)\}", _cite, text)
    text = re.sub(r"\\(?:auto|page|c|C)?ref\s*\{([^}]*)\}", lambda m: labels.get(m[1].strip(), "?"), text)
    text = re.sub(r"\\eqref\s*\{([^}]*)\}", lambda m: f"({labels.get(m[1].strip(), '?')})", text)
    text = re.sub(r"\\href\s*\{[^}]*\}\s*\{([^{}]*)\}", r"\1", text)
    text = re.sub(r"\\([\"'`^~=.])\s*\{?([a-zA-Z])\}?", lambda m: unicodedata.normalize("NFC", m[2] + ACCENTS[m[1]]), text)
    text = re.sub(r"\\([cvuH])\{([a-zA-Z])\}", lambda m: unicodedata.normalize("NFC", m[2] + ACCENTS[m[1]]), text)
    command = re.compile(r"\\([a-zA-Z]+)\*?\s*(?:\[[^\[\]{}]*\])?\s*\{([^{}]*)\}")

    def one(m: re.Match) -> str:
        name, arg = m[1], m[2]
        if name in DROP_WITH_ARGUMENT:
            return ""
        if name == "footnote":
            return f" ({arg.strip()})"
        if name == "dQuote":
            return f"\u201c{arg}\u201d"
        if name == "sQuote":
            return f"\u2018{arg}\u2019"
        if name == "item":  # "\item{x}": a group after an item
            return m[0]
        return arg

    for _ in range(12):  # innermost groups first, until nothing changes
        new = command.sub(one, text)
        new = re.sub(r"(?<!\\)\{([^{}]*)\}", r"\1", new)
        if new == text:
            break
        text = new
    text = re.sub(r"\\(" + "|".join(NAMED) + r")(?![a-zA-Z])\s?", lambda m: NAMED[m[1]], text)
    text = re.sub(r"\\\\(?:\[[^\]]*\])?[ \t]*", "\n", text)
    text = re.sub(r"\\([%&_#${}])", r"\1", text)
    text = re.sub(r"\\[,;:! ]", " ", text)
    text = re.sub(r"\\[a-zA-Z]+\*?", "", text)  # commands that print nothing here (\noindent, \centering ...)
    text = text.replace("~", " ").replace("``", "\u201c").replace("''", "\u201d")
    text = text.replace("---", "\u2014").replace("--", "\u2013")
    return text


def render_lists(text: str) -> str:
    """``\\item`` -> a line starting with "- " (itemize), "N. " (enumerate) or "label: " (description)."""
    out, pos, stack = [], 0, []  # stack: [kind, items so far]
    for m in re.finditer(r"\\begin\{(itemize|enumerate|description)\}|\\end\{(itemize|enumerate|description)\}"
                         r"|\\item\b\s*(?:\[([^\]]*)\])?", text):
        out.append(text[pos : m.start()].rstrip() if m[1] or not m[2] else text[pos : m.start()])
        pos = m.end()  # a list and its items continue the paragraph, one line per item
        if m[1]:
            stack.append([m[1], 0])
        elif m[2]:
            if stack:
                stack.pop()
            out.append("\n")
        else:
            kind = stack[-1][0] if stack else "itemize"
            if stack:
                stack[-1][1] += 1
            indent = "  " * max(len(stack) - 1, 0)
            if m[3] is not None:
                label = f"{m[3].strip()}: " if kind == "description" else f"{m[3].strip()} "
            else:
                label = f"{stack[-1][1]}. " if kind == "enumerate" and stack else "- "
            out.append(f"\n{indent}{label}")
    out.append(text[pos:])
    return "".join(out)


def mark_headings(text: str) -> str:
    """Section commands -> heading lines (numbered as LaTeX numbers them), each a block of its own."""
    out, pos = [], 0
    counters, appendix = [0, 0, 0], False
    pattern = re.compile(r"\\(section|subsection|subsubsection|paragraph)(\*?)|\\appendix\b|\\(?:begin|end)\{appendix\}")
    for m in pattern.finditer(text):
        if m.start() < pos:
            continue
        out.append(text[pos : m.start()])
        pos = m.end()
        if not m[1]:
            if "end{" not in m[0]:
                appendix, counters = True, [0, 0, 0]
            continue
        _, after = optional(text, m.end())
        title = braced(text, after)
        if title is None:
            continue
        pos = title[1]
        number = ""
        if not m[2] and m[1] in ("section", "subsection"):  # deeper headings print no number here
            depth = ("section", "subsection", "subsubsection").index(m[1])
            counters[depth] += 1
            counters[depth + 1 :] = [0] * (2 - depth)
            first = ROMAN_APPENDIX[(counters[0] - 1) % 26] if appendix else str(counters[0])
            number = ".".join([first, *map(str, counters[1 : depth + 1])]) + ". "
        heading = " ".join((number + title[0]).split())
        out.append(f"\n\n{HEADING_MARK}{SECTIONS[m[1]]}{heading}\n\n")
    out.append(text[pos:])
    return "".join(out)


def remove_command(text: str, name: str, mark: str = "") -> str:
    """Every ``\\name{...}`` (braces balanced) replaced by ``mark``."""
    out, pos = [], 0
    for m in re.finditer(r"\\" + name + r"(?![a-zA-Z])", text):
        if m.start() < pos:
            continue
        group = braced(text, m.end())
        if group is None:
            continue
        out.append(text[pos : m.start()] + mark)
        pos = group[1]
    out.append(text[pos:])
    return "".join(out)


def restore_held(text: str, held: list[str]) -> str:
    while HOLD_OPEN in text:  # held pieces may hold others (inline code inside mathematics)
        text = re.sub(HOLD_OPEN + r"(\d+)" + HOLD_CLOSE, lambda m: held[int(m[1])], text)
    return text


def tidy_block(block: str) -> str:
    """One block's text: lines without surplus spaces, no empty lines inside."""
    lines = [" ".join(line.split()) for line in block.split("\n")]
    return "\n".join(line for line in lines if line)
