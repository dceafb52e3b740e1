"""The CPU path of `nas_attn.device` (GPU paths are exercised by benchmarks on a GPU machine)."""
import pytest
import torch

from nas_attn import device as dev
from nas_attn.device import DeviceError, Runtime, seed_everything, select_device


@pytest.fixture
def no_accelerator(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setattr(dev, "_mps_available", lambda: False)


def test_auto_picks_cpu_without_cuda(no_accelerator):
    assert select_device() == torch.device("cpu")
    assert select_device("auto") == torch.device("cpu")
    assert select_device(" CPU ") == torch.device("cpu")
    assert dev.available_devices() == ["cpu"]


def test_auto_prefers_cuda_then_mps(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert select_device(None) == torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(dev, "_mps_available", lambda: True)
    assert select_device(None) == torch.device("mps")


@pytest.mark.parametrize("name", ["tpu", "gpu0", "", "xla", "cuda:x"])
def test_unknown_device_names_what_is_accepted(name, no_accelerator):
    if name == "":
        assert select_device(name) == torch.device("cpu")  # empty = auto
        return
    with pytest.raises(DeviceError, match="accepted: auto, cpu, cuda, cuda:N, mps") as e:
        select_device(name)
    assert repr(name) in str(e.value)


@pytest.mark.parametrize("name", ["cuda", "cuda:1", "mps"])
def test_unavailable_device_names_what_is_available(name, no_accelerator):
    with pytest.raises(DeviceError, match="not available.*available: cpu"):
        select_device(name)


def test_cpu_runtime_policy(no_accelerator):
    rt = Runtime.create(None, amp=True, channels_last=True, spatial_dims=2)
    assert rt.device.type == "cpu"
    assert rt.amp is False and rt.channels_last is False and rt.dtype == torch.float32
    assert rt.memory_format == torch.contiguous_format
    assert not rt.scaler().is_enabled()
    assert "cpu" in rt.describe()


def test_autocast_is_a_noop_on_cpu(no_accelerator):
    rt = Runtime.create("cpu")
    lin = torch.nn.Linear(4, 4)
    x = torch.randn(2, 4)
    with rt.autocast():
        assert not torch.is_autocast_enabled("cpu")
        y = lin(x)
    assert y.dtype == torch.float32
    assert torch.equal(y, lin(x))


def test_to_device_and_prepare_model():
    rt = Runtime(device=torch.device("cpu"), channels_last=True, spatial_dims=2)
    batch = {"image": torch.randn(2, 3, 8, 8), "mask": torch.zeros(2, 8, 8, dtype=torch.long),
             "names": ["a", "b"], "pair": (torch.ones(1), 3)}
    out = rt.to_device(batch)
    assert out["image"].is_contiguous(memory_format=torch.channels_last)
    assert out["mask"].dtype == torch.long and out["names"] == ["a", "b"]
    assert isinstance(out["pair"], tuple) and out["pair"][1] == 3
    model = rt.prepare_model(torch.nn.Conv2d(3, 4, 3))
    assert model.weight.is_contiguous(memory_format=torch.channels_last)
    rt3 = Runtime(device=torch.device("cpu"), channels_last=True, spatial_dims=3)
    assert rt3.memory_format == torch.channels_last_3d
    v = rt3.to_device(torch.randn(1, 2, 4, 4, 4))
    assert v.is_contiguous(memory_format=torch.channels_last_3d)


def test_seed_everything_is_reproducible():
    seed_everything(123)
    a = torch.randn(5)
    seed_everything(123, deterministic=True)
    b = torch.randn(5)
    seed_everything(0)  # back to the fast default
    assert torch.equal(a, b)
    assert not torch.are_deterministic_algorithms_enabled()
