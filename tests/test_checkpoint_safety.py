"""Segmenter checkpoints are loaded weights-only: a hostile file never runs code, a wrong one is a clear error."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from lit_block.cli import main
from lit_block.errors import UsageError
from lit_block.segmentation.model import SegmenterNet


class CreatesMarker:
    """Unpickling this calls ``open(marker, "w")``: the file appears only if the pickle's code runs."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def hostile_torch_save(path: Path, marker: Path) -> None:
    # a checkpoint that looks right (hyper_parameters, state_dict) with the payload next to them
    torch.save({"hyper_parameters": {"hidden": 8}, "state_dict": {}, "payload": CreatesMarker(marker)}, path)


def hostile_raw_pickle(path: Path, marker: Path) -> None:
    path.write_bytes(pickle.dumps(CreatesMarker(marker), protocol=2))  # a plain pickle, not torch's zip format


@pytest.mark.parametrize("write", [hostile_torch_save, hostile_raw_pickle])
def test_a_hostile_checkpoint_is_refused_without_running_its_code(write, tmp_path):
    marker, ckpt = tmp_path / "marker", tmp_path / "hostile.ckpt"
    write(ckpt, marker)
    with pytest.raises(UsageError, match="hostile.ckpt") as err:
        SegmenterNet.from_checkpoint(str(ckpt))
    assert "weights-only" in str(err.value)
    assert not marker.exists()


@pytest.mark.parametrize(
    "content",
    [
        b"This is a text file, not a checkpoint.\n",
        b"",
        b"PK\x03\x04 truncated zip",
        b"\x80\x02}q\x00.",  # a pickled empty dict: loads, but holds no hyper_parameters / state_dict
    ],
)
def test_a_file_that_is_no_checkpoint_is_a_usage_error_naming_it(content, tmp_path):
    ckpt = tmp_path / "notes.ckpt"
    ckpt.write_bytes(content)
    with pytest.raises(UsageError, match=r"notes\.ckpt is not a lit-block segmenter checkpoint"):
        SegmenterNet.from_checkpoint(str(ckpt))


def test_a_saved_tensor_is_no_checkpoint(tmp_path):
    torch.save(torch.zeros(3), tmp_path / "tensor.ckpt")
    with pytest.raises(UsageError, match="holds a Tensor, not a dict"):
        SegmenterNet.from_checkpoint(str(tmp_path / "tensor.ckpt"))


def test_segment_cli_reports_a_text_checkpoint_in_one_line(tmp_path, tiny_tokenizer_dir, capsys):
    (tmp_path / "input.txt").write_text("Some text. More text.\n")
    (tmp_path / "model.ckpt").write_text("not a checkpoint\n")
    code = main(["segment", str(tmp_path / "input.txt"), "--method", "segmenter", "--checkpoint",
                 str(tmp_path / "model.ckpt"), "--tokenizer", str(tiny_tokenizer_dir)])
    err = capsys.readouterr().err
    assert code == 2 and "model.ckpt is not a lit-block segmenter checkpoint" in err and "Traceback" not in err


def test_checkpoints_hold_plain_values_even_when_given_paths(tmp_path):
    """Hyper-parameters given as ``Path`` objects (from Python, not the CLI) are saved as strings, so the
    checkpoint still loads weights-only and rebuilds the same head."""
    from lightning.fabric.utilities.data import AttributeDict

    from lit_block.segmentation.module import SegmenterModule

    module = SegmenterModule(encoder_layers=1, hidden=16, gru_layers=1)
    module.hparams["encoder"] = Path("all-minilm-l6-v2")  # as if passed as a Path
    checkpoint = {"state_dict": module.state_dict(), "hyper_parameters": AttributeDict(module.hparams),
                  "datamodule_hyper_parameters": {"dataset_path": Path("data/semanticseg"), "splits": (Path("a"),)}}
    module.on_save_checkpoint(checkpoint)  # what Lightning calls last before writing the file
    torch.save(checkpoint, tmp_path / "seg.ckpt")

    loaded = torch.load(tmp_path / "seg.ckpt", weights_only=True)
    assert loaded["hyper_parameters"]["encoder"] == "all-minilm-l6-v2"
    assert loaded["datamodule_hyper_parameters"] == {"dataset_path": "data/semanticseg", "splits": ("a",)}
    net = SegmenterNet.from_checkpoint(str(tmp_path / "seg.ckpt"))
    for name, value in module.net.head.state_dict().items():
        assert torch.equal(net.head.state_dict()[name], value)
