"""SAM network, checkpoint loading, SAM features in registration, and training."""

from __future__ import annotations

import logging

import itk
import numpy as np
import pytest
import torch

from itk_samconvex import InputError, preset_config, register
from itk_samconvex.apps.phantom import make_phantom_pair
from itk_samconvex.apps.training.checkpoints import save_sam
from itk_samconvex.solver.features.sam import SAMNetwork, embed, local_shape, preprocess
from itk_samconvex.solver.features.sam_checkpoint import ENV_VAR, load_sam


@pytest.fixture(scope="module")
def small_net():
    torch.manual_seed(0)
    return SAMNetwork(8).eval()


@pytest.mark.parametrize("shape", [(33, 47, 61), (20, 30, 40), (17, 96, 95), (9, 17, 33)])
def test_output_shapes_and_strides_for_odd_sizes(small_net, shape):
    local, glob = small_net(torch.randn(1, 1, *shape) * 300)
    assert local.shape == (1, 16, *local_shape(shape))
    assert local_shape(shape) == (shape[0] // 2, -(-shape[1] // 2), -(-shape[2] // 2))
    # global: z halves twice from floor(Z/2); y, x halve four times (ceil)
    z, y, x = shape[0] // 2, shape[1], shape[2]
    for _ in range(4):
        y, x = -(-y // 2), -(-x // 2)
    assert glob.shape == (1, 16, -(-z // 2), y, x)
    for emb in (local, glob):
        assert torch.allclose(emb.norm(dim=1), torch.ones(()), atol=1e-5)


def test_published_layout_has_138_keys_and_32_8_million_parameters():
    network = SAMNetwork()
    assert len(network.state_dict()) == 138
    assert sum(p.numel() for p in network.parameters()) == 32_832_960
    shapes = {k: tuple(v.shape) for k, v in network.state_dict().items()}
    assert shapes["backbone.conv1.conv.weight"] == (64, 1, 3, 7, 7)
    assert shapes["backbone.layer3.0.conv1.conv.weight"] == (256, 128, 3, 3, 3)
    assert shapes["backbone.layer2.0.downsample.conv.weight"] == (128, 64, 1, 1, 1)
    assert shapes["neck.lateral_convs.2.conv.weight"] == (128, 256, 1, 1, 1)
    assert shapes["read_out_head.fpn_convs.0.conv.weight"] == (128, 128, 3, 3, 3)


def test_tiled_inference_equals_whole_volume(small_net):
    volume = torch.randn(1, 1, 100, 48, 40) * 300
    whole = embed(small_net, volume)
    tiled = embed(small_net, volume, tile_z=24, margin=32)
    for a, b in zip(whole, tiled, strict=True):
        assert a.shape == b.shape
        assert float((a - b).abs().max()) < 1e-5


# --------------------------------------------------------------------------- checkpoints


def mmcv_style(network: SAMNetwork, prefix: str = "") -> dict:
    return {
        "meta": {"mmcv_version": "1.4.7", "iter": 38000},
        "state_dict": {prefix + k: v.clone() for k, v in network.state_dict().items()},
    }


@pytest.mark.parametrize("layout", ["mmcv", "plain", "module", "ours"])
def test_checkpoint_layouts_load_and_reproduce_the_features(tmp_path, small_net, layout):
    path = tmp_path / "sam.pth"
    if layout == "mmcv":
        torch.save(mmcv_style(small_net), path)
    elif layout == "plain":
        torch.save(small_net.state_dict(), path)
    elif layout == "module":
        torch.save(mmcv_style(small_net, "module."), path)
    else:
        save_sam(small_net, path, {"note": "test"})
    loaded = load_sam(path)
    volume = torch.randn(1, 1, 20, 32, 32) * 300
    for a, b in zip(small_net(volume), loaded(volume), strict=True):
        assert torch.equal(a, b)


def test_uae_semantic_head_is_ignored_with_a_log_line(tmp_path, small_net, caplog):
    payload = mmcv_style(small_net)
    payload["state_dict"]["semantic_head.fpn_convs.0.conv.weight"] = torch.zeros(16, 16, 3, 3, 3)
    torch.save(payload, tmp_path / "uae.pth")
    with caplog.at_level(logging.INFO):
        load_sam(tmp_path / "uae.pth")
    assert "ignoring 1 UAE key(s)" in caplog.text


def test_fp16_storage_and_absent_batch_counters_load(tmp_path, small_net):
    state = {
        k: (v.half() if v.is_floating_point() else v)
        for k, v in small_net.state_dict().items()
        if not k.endswith("num_batches_tracked")
    }
    torch.save({"state_dict": state}, tmp_path / "half.pth")
    loaded = load_sam(tmp_path / "half.pth")
    assert loaded.backbone.conv1.conv.weight.dtype == torch.float32


def test_wrong_shape_and_missing_key_fail_with_the_exact_diff(tmp_path, small_net):
    payload = mmcv_style(small_net)
    payload["state_dict"]["neck.fpn_convs.0.conv.weight"] = torch.zeros(16, 16, 1, 1, 1)
    del payload["state_dict"]["backbone.layer4.1.conv2.bn.running_var"]
    torch.save(payload, tmp_path / "bad.pth")
    with pytest.raises(InputError) as info:
        load_sam(tmp_path / "bad.pth")
    message = str(info.value)
    assert "2 difference(s)" in message
    assert "missing key backbone.layer4.1.conv2.bn.running_var (expected shape (64,))" in message
    assert (
        "wrong shape for neck.fpn_convs.0.conv.weight: checkpoint (16, 16, 1, 1, 1), "
        "expected (16, 16, 3, 3, 3)"
    ) in message


def test_no_checkpoint_says_how_to_get_weights(monkeypatch, tmp_path):
    from itk_samconvex.solver.features import sam_checkpoint

    monkeypatch.delenv(ENV_VAR, raising=False)  # and the packaged weights gone:
    monkeypatch.setattr(sam_checkpoint, "PACKAGED_WEIGHTS", tmp_path / "absent.pt")
    with pytest.raises(
        InputError,
        match=r"need SAM weights and none were given.*ModelScope.*"
        r"samconvex train-sam.*features='mind'",
    ):
        load_sam(None)


def test_checkpoint_from_the_environment_variable(tmp_path, small_net, monkeypatch):
    save_sam(small_net, tmp_path / "env.pt")
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "env.pt"))
    assert load_sam(None).width == 8
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "absent.pt"))
    with pytest.raises(
        InputError,
        match=r"absent\.pt \(from SAMCONVEX_SAM_CHECKPOINT\) does "
        r"not exist",
    ):
        load_sam(None)


# --------------------------------------------------------------------------- registration


@pytest.mark.parametrize("features", ["sam", "sam+mind"])
def test_registration_runs_with_sam_features(tmp_path, small_net, features):
    save_sam(small_net, tmp_path / "sam.pt")
    pair = make_phantom_pair(size=(48, 40, 40), spacing=(6.0, 6.0, 6.0))
    result = register(
        pair.fixed,
        pair.moving,
        preset_config(
            "fast",
            features=features,
            sam_checkpoint=str(tmp_path / "sam.pt"),
            working_spacing_mm=4.0,
            io_iterations=5,
        ),
    )
    field = np.asarray(itk.array_view_from_image(result.field))
    assert field.shape == (*pair.fixed_grid.shape, 3)
    assert np.isfinite(field).all()
    assert set(result.timings) >= {"features", "level 3/3", "instance optimisation"}


# --------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def ct_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ct")
    for seed in (0, 1):
        pair = make_phantom_pair(size=(56, 48, 48), spacing=(4.0, 4.0, 4.0), seed=seed)
        itk.imwrite(pair.fixed, str(folder / f"ct{seed}.nii.gz"))
        itk.imwrite(pair.fixed_labels, str(folder / f"labels{seed}.nii.gz"))  # skipped
    return folder


def test_short_training_lowers_the_loss_and_resumes(tmp_path, ct_folder):
    from itk_samconvex.apps.training.losses import LossSettings
    from itk_samconvex.apps.training.train import TrainSettings, train_sam

    loss = LossSettings(
        local_queries=40,
        local_hard=200,
        local_negatives=64,
        global_hard=40,
        global_negatives=32,
        global_batch_negatives=32,
    )
    settings = TrainSettings(
        width=8,
        patch=(16, 48, 48),
        volumes_per_step=2,
        iterations=40,
        learning_rate=0.02,
        warmup=5,
        checkpoint_every=20,
        loss=loss,
        hard_mining_start=1000,
    )
    out = tmp_path / "sam.pt"
    train_sam(ct_folder, out, settings, progress=False)
    meta = torch.load(out, map_location="cpu", weights_only=False)["meta"]
    losses = [row["loss"] for row in meta["loss_log"]]
    assert len(losses) == 40 and meta["volumes"] == ["ct0.nii.gz", "ct1.nii.gz"]
    # the local term (dense positives) must learn; steps without a positive pair count 0
    local = [row["local"] for row in meta["loss_log"] if row["local"] > 0]
    assert np.mean(local[-10:]) < 0.9 * np.mean(local[:10])
    assert load_sam(out).width == 8  # the loader reads our checkpoints
    more = TrainSettings(**{**settings.__dict__, "iterations": 45})
    train_sam(ct_folder, out, more, progress=False)
    meta = torch.load(out, map_location="cpu", weights_only=False)["meta"]
    assert [row["iteration"] for row in meta["loss_log"]] == list(range(1, 46))
    assert (tmp_path / "sam.pt.log.csv").read_text().count("\n") == 46

    # the training record: the loss curve from the log, and the shipped form of the weights
    from itk_samconvex.apps.training.checkpoints import export_weights
    from itk_samconvex.apps.training.plot import plot_loss, read_log

    assert list(read_log(tmp_path / "sam.pt.log.csv")["iteration"]) == list(range(1, 46))
    from itk_samconvex.apps.training.plot import wall_seconds

    assert wall_seconds(np.array([1.0, 2.0, 5.0, 0.5, 3.0])) == 8.0  # resumed after 5 s
    png = plot_loss(tmp_path / "sam.pt.log.csv", tmp_path / "loss.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    shipped = export_weights(out, tmp_path / "shipped.pt")
    assert shipped.stat().st_size < out.stat().st_size  # no optimizer state, float16
    original, exported = load_sam(out), load_sam(shipped)
    x = torch.linspace(-1000.0, 1000.0, 16 * 32 * 32).reshape(1, 1, 16, 32, 32)
    with torch.no_grad():
        a, b = original(preprocess(x)), exported(preprocess(x))
    for u, v in zip(a, b, strict=True):  # unit embeddings: compare directions
        cosine = (u * v).sum(1)
        assert float(cosine.mean()) > 0.999 and float(cosine.min()) > 0.95, cosine
