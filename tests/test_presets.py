import pytest

from tinygpt_bench import model, presets
from tinygpt_bench.errors import UserError

EXPECTED = {
    "tiny": 70_464, "small": 366_432, "medium": 838_400, "large": 2_743_296, "xl": 6_416_896,
    "huge": 9_608_704, "massive": 25_039_872, "mega": 25_138_176, "behemoth": 473_244_160,
}


def test_nine_presets_with_model_md_counts():
    assert presets.builtin_names() == list(EXPECTED)
    for name, count in EXPECTED.items():
        p = presets.load(name)
        assert model.param_count(p) == count
        assert model.Layout(p).total == count


def test_layout_is_contiguous_and_views_share_memory():
    p = presets.load("tiny")
    lay = model.Layout(p)
    off = 0
    for s in lay.specs:
        assert s.offset == off
        off += s.size
    flat = lay.init(0)
    v = lay.views(flat)
    v["wq"][0, 0, 0] = 123.0
    assert flat[lay.by_name["wq"].offset] == 123.0


def test_init_follows_model_md():
    p = presets.load("small")
    lay = model.Layout(p)
    a, b = lay.init(7), lay.init(7)
    assert a.dtype.name == "float32" and (a == b).all()
    assert not (lay.init(8) == a).all()
    v = lay.views(a)
    for name in ("ln1_w", "ln2_w", "lnf_w"):
        assert (v[name] == 1).all()
    for name in ("bq", "bo", "fc_in_b", "fc_out_b", "ln1_b", "lnf_b"):
        assert (v[name] == 0).all()
    assert abs(v["fc_in_w"].std() - 0.02) < 0.001
    assert abs(v["wo"].std() - 0.02 / (2 * p.layers) ** 0.5) < 0.001
    mask = lay.decay_mask()
    assert mask[lay.by_name["wq"].offset] == 1 and mask[lay.by_name["bq"].offset] == 0
    assert mask[lay.by_name["tok_emb"].offset] == 1 and mask[lay.by_name["ln1_w"].offset] == 0


def test_flops_counted_by_hand_for_tiny():
    p = presets.load("tiny")  # B16 T32 C48 L2
    B, T, C, L = 16, 32, 48, 2
    fwd = B * T * (L * 24 * C * C + 2 * C * 256) + B * L * 2 * C * T * (T + 1)
    assert model.flops_per_step(p) == {"forward": fwd, "backward": 2 * fwd, "total": 3 * fwd}


def test_behemoth_state_is_past_4gib():
    b = model.step_bytes(presets.load("behemoth"))
    assert b["weights"] + b["grads"] + b["adam"] == 16 * 473_244_160 > 4 * 2**30


def write(tmp_path, text, name="p.toml"):
    f = tmp_path / name
    f.write_text(text)
    return str(f)


GOOD = "layers = 1\nd_model = 8\nheads = 2\nctx = 4\nbatch = 2\n"


def test_preset_from_path(tmp_path):
    p = presets.load(write(tmp_path, GOOD, "mine.toml"))
    assert (p.name, p.layers, p.d_model, p.heads, p.ctx, p.batch) == ("mine", 1, 8, 2, 4, 2)


@pytest.mark.parametrize(
    "text, needle",
    [
        ("layers = [", "malformed TOML"),
        ("d_model = 8\nheads = 2\nctx = 4\nbatch = 2\n", "missing field 'layers'"),
        (GOOD.replace("heads = 2", "heads = 3"), "not divisible by heads"),
        (GOOD.replace("ctx = 4", "ctx = 0"), "field 'ctx' must be a positive integer"),
        (GOOD.replace("batch = 2", "batch = 2.5"), "field 'batch' must be a positive integer"),
        (GOOD.replace("batch = 2", "batch = true"), "field 'batch' must be a positive integer"),
        (GOOD + "dropout = 1\n", "unknown key 'dropout'"),
    ],
)
def test_bad_preset_files_name_file_and_field(tmp_path, text, needle):
    path = write(tmp_path, text)
    with pytest.raises(UserError) as e:
        presets.load(path)
    assert needle in str(e.value) and path in str(e.value)


def test_unknown_preset_lists_choices():
    with pytest.raises(UserError, match="unknown preset 'gigantic'.*tiny, small"):
        presets.load("gigantic")
