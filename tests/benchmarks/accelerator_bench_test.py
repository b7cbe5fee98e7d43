"""benchmarks/accelerator_bench.py: the hand FLOP count against published
counts and hand derivations, the peak table, the out-of-memory handling of
the grid, and its CPU smoke configuration end to end."""

import json
import pathlib
import subprocess
import sys

import keras
import pytest
import tensorflow as tf

from keras_contrast.models import ResNetBackbone

BENCHMARKS = pathlib.Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
import accelerator_bench as bench  # noqa: E402


def test_forward_flops_match_published_resnet_counts():
    # He et al. 2016, table 1: 3.8e9 / 1.8e9 multiply-adds ("FLOPs" there);
    # the exact counts with the 1000-way head replaced by nothing are
    # 4.09 GMACs (ResNet-50) and 1.81 GMACs (ResNet-18).
    resnet50 = ResNetBackbone(depth=50, stem="imagenet", input_shape=(224, 224, 3))
    assert bench.forward_flops(resnet50) == pytest.approx(2 * 4.09e9, rel=0.005)
    resnet18 = ResNetBackbone(depth=18, stem="imagenet", input_shape=(224, 224, 3))
    assert bench.forward_flops(resnet18) == pytest.approx(2 * 1.81e9, rel=0.005)


def test_forward_flops_of_a_hand_counted_model():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)           # 2·8·8·3·3·3·4
    x = keras.layers.Conv2D(6, 1, strides=2, use_bias=False)(x)     # 2·4·4·1·1·4·6
    x = keras.layers.Dense(5)(x)                                    # 2·(4·4)·6·5
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(2)(x))           # 2·5·2
    assert bench.forward_flops(model) == 2 * (8 * 8 * 9 * 3 * 4 + 4 * 4 * 4 * 6
                                              + 16 * 6 * 5 + 5 * 2)


def test_step_flops_and_peaks():
    assert bench.step_flops(8.2e9, 256, "native") == 3 * 2 * 8.2e9 * 256
    assert bench.step_flops(8.2e9, 256, "tiled") == 3 * 2 * 8.2e9 * 256
    assert bench.step_flops(8.2e9, 256, "gradcache") == 4 * 2 * 8.2e9 * 256
    assert bench.peak_tflops("NVIDIA H100 PCIe", "float32")[0] == 378.0
    assert bench.peak_tflops("NVIDIA H100 80GB HBM3", "mixed_bfloat16")[0] == 989.4
    assert bench.peak_tflops("NVIDIA H200", "float32")[0] == 494.7
    assert bench.peak_tflops("NVIDIA A100-SXM4-80GB", "float32")[0] == 156.0
    assert bench.peak_tflops("Intel Xeon", "float32")[0] is None
    assert bench.peak_tflops("Intel Xeon", "float32", override=2.0) == (2.0, "--peak-tflops")


def test_out_of_memory_is_recognised():
    assert bench.is_out_of_memory(tf.errors.ResourceExhaustedError(None, None, "OOM"))
    assert bench.is_out_of_memory(RuntimeError("CUDA_ERROR_OUT_OF_MEMORY: out of memory"))
    assert not bench.is_out_of_memory(ValueError("`temperature` must be > 0"))


def test_larger_batches_are_skipped_after_an_out_of_memory(monkeypatch, tmp_path):
    calls = []

    def fake_child(command, key, *args):
        calls.append(key["batch_size"])
        if key["batch_size"] >= 64:
            return {**key, "status": "out_of_memory", "error": "OOM when allocating"}
        return {**key, "status": "ok", "step_seconds": 0.5, "images_per_second": 64.0,
                "peak_memory_bytes": 2**30, "mfu": 0.4}

    monkeypatch.setattr(bench, "run_child", fake_child)
    output = tmp_path / "out.json"
    bench.main(["--variants", "native", "--xla", "on", "--precisions", "float32",
                "--batch-sizes", "128,32,64,256", "--output", str(output)])
    assert calls == [32, 64]
    statuses = [(r["batch_size"], r["status"]) for r in json.loads(output.read_text())[
        "results"]]
    assert statuses == [(32, "ok"), (64, "out_of_memory"), (128, "skipped"),
                        (256, "skipped")]


@pytest.mark.parametrize("argv,message", [
    (["--variants", "fast"], "--variants"), (["--xla", "maybe"], "--xla"),
    (["--batch-sizes", "8,x"], "--batch-sizes"), (["--batch-sizes", "1"], ">= 2")])
def test_bad_arguments_are_refused(argv, message, capsys):
    with pytest.raises(SystemExit):
        bench.parse_args(argv)
    assert message in capsys.readouterr().err


def test_cpu_smoke_grid_runs_end_to_end(tmp_path):
    output = tmp_path / "smoke.json"
    subprocess.run([sys.executable, str(BENCHMARKS / "accelerator_bench.py"), "--smoke",
                    "--output", str(output)], check=True, capture_output=True, timeout=600)
    results = json.loads(output.read_text())["results"]
    assert [(r["variant"], r["xla"], r["precision"]) for r in results] == [
        (v, x == "on", p) for v, x, p in bench.SMOKE_GRID]
    for record in results:
        assert record["status"] == "ok", record
        assert record["loss_finite"] and record["device"] == "CPU:0"
        assert record["images_per_second"] == pytest.approx(8 / record["step_seconds"])
        assert record["flops_per_step"] == bench.step_flops(
            record["forward_flops_per_image"], 8, record["variant"])
        assert record["mfu"] is None and record["peak_memory_bytes"] > 0
        assert len(record["steps_seconds"]) == 2
