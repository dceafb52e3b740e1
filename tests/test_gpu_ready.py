"""The CUDA path's mechanisms, proven on the CPU: dtype and memory format kept by every attention
module under bf16 autocast, device selection and precision policy, the cost probe under the
training's settings and its out-of-memory handling, loader workers, window padding."""
from __future__ import annotations

import contextlib
import math

import pytest
import torch
import torch_state

from nas_attn import device as device_mod
from nas_attn.models import tokens
from nas_attn.architecture.registry import create_attention, get_info, names
from nas_attn.device import Runtime

SMALL = {2: (12, 12), 3: (4, 5, 6)}   # within the token budget: attention at full resolution
LARGE = {2: (24, 32), 3: (8, 10, 12)}  # beyond it: pooled grid, interpolated back
FORMATS = {2: torch.channels_last, 3: torch.channels_last_3d}


@pytest.fixture(autouse=True)
def _one_thread():
    """bf16 on the CPU runs oneDNN's AVX512-BF16 kernels, and on such CPUs (AMD EPYC here, torch
    2.14.1) its convolution backward-weights kernel spins for ever with two threads once a larger
    cached primitive ran before (cbam 3D at 4x5x6 after 8x10x12; one thread, or
    ONEDNN_PRIMITIVE_CACHE_CAPACITY=0, does not hang). What these tests prove does not depend
    on the thread count, so they run on one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _site(name: str, dims: int, channels: int = 16):
    info = get_info(name)
    guide = 2 * channels if info.kind == "paired" else None
    m = create_attention(name, channels, spatial_dims=dims, guide_channels=guide)
    with torch.no_grad():  # live residual terms (gamma = 0 would hide a dtype leak)
        for n, p in m.named_parameters():
            if n.rsplit(".", 1)[-1].startswith("gamma"):
                p.fill_(0.5)
    return m, guide


@pytest.mark.parametrize("sizes", (SMALL, LARGE), ids=("within_budget", "pooled"))
@pytest.mark.parametrize("dims", (2, 3))
@pytest.mark.parametrize("name", names())
def test_attention_keeps_dtype_and_memory_format_under_autocast(name, dims, sizes):
    if dims not in get_info(name).dims:
        pytest.skip(f"{name} is {get_info(name).dims}D only")
    torch.manual_seed(0)
    fmt = FORMATS[dims]
    m, guide = _site(name, dims)
    m = m.to(memory_format=fmt)
    x = torch.randn(2, 16, *sizes[dims]).to(memory_format=fmt).bfloat16().requires_grad_()
    g = None
    if guide is not None:
        g = torch.randn(2, guide, *(max(1, s // 2) for s in sizes[dims]))
        g = g.to(memory_format=fmt).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = m(x) if g is None else m(x, g)
    assert y.dtype == torch.bfloat16, f"{name} returned {y.dtype} for bfloat16 input"
    assert y.is_contiguous(memory_format=fmt), f"{name} dropped {fmt}"
    (y.float() * torch.randn(y.shape)).sum().backward()
    assert x.grad.dtype == torch.bfloat16 and x.grad.is_contiguous(memory_format=fmt)
    # float32 input under autocast (the first layer's case): float32 back
    with torch.autocast("cpu", dtype=torch.bfloat16):
        x32 = torch.randn(2, 16, *sizes[dims]).to(memory_format=fmt)
        y32 = m(x32) if g is None else m(x32, g)
    assert y32.dtype == torch.float32


@pytest.mark.parametrize("dims", (2, 3))
@pytest.mark.parametrize("name", ["channel_self", "dual"])
def test_channel_attention_same_numbers_in_both_formats(name, dims):
    torch.manual_seed(0)
    m, _ = _site(name, dims)
    x = torch.randn(2, 16, *LARGE[dims])
    ref = m(x)
    out = m(x.to(memory_format=FORMATS[dims]))
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_sk_matches_timm_forward():
    torch.manual_seed(0)
    for c in (8, 7):  # split and unsplit input
        m = create_attention("sk", c, spatial_dims=2).eval()
        x = torch.randn(2, c, 9, 11)
        torch.testing.assert_close(m(x), m.module(x))


def test_interpolation_matrices_are_cached(monkeypatch):
    calls = []
    real = tokens._build_interp
    monkeypatch.setattr(tokens, "_build_interp", lambda *a: calls.append(a[:2]) or real(*a))
    monkeypatch.setattr(tokens, "_CONSTANTS", {})
    t = torch.randn(1, 2, 5, 7)
    a = tokens.linear_resize(t, (9, 13))
    b = tokens.linear_resize(t, (9, 13))
    assert len(calls) == 2 and torch.equal(a, b)  # one build per axis, then reused
    monkeypatch.setattr(tokens, "CACHE_CONSTANTS", False)
    c = tokens.linear_resize(t, (9, 13))
    assert len(calls) == 4 and torch.equal(a, c)
    with torch.inference_mode():  # inference tensors must not enter the cache
        monkeypatch.setattr(tokens, "CACHE_CONSTANTS", True)
        tokens.linear_resize(torch.randn(1, 2, 3, 4), (6, 8))
    assert all(k[0][1:] != (6, 3) for k in tokens._CONSTANTS)


# ----- the cost probe: runtime settings, trial-order independence, out of memory ---------------




def _arch():
    from nas_attn.architecture.description import AttnSpec, UNetArch

    return UNetArch(depth=1, widths=(8, 16), bottleneck=AttnSpec("self"),
                    skip=(AttnSpec("gate"),))


def test_cost_figures_do_not_depend_on_trial_order(session, tmp_path):
    import optuna

    from nas_attn.searching.run import run_search

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    s = session()
    cfg = s.objective.train_config({})
    keys = ("params", "flops", "activation_mb")
    first = s.objective._measure(_arch(), cfg)[1].as_dict()
    run_search(s, 2, None)  # trains, changes the global RNG, cuDNN flags, norm statistics...
    torch.manual_seed(1234)
    torch.randn(7)
    later = s.objective._measure(_arch(), cfg)[1].as_dict()
    assert {k: first[k] for k in keys} == {k: later[k] for k in keys}
    assert later["latency_ms"] > 0


def test_cost_probe_uses_autocast_and_memory_format():
    from nas_attn.searching.cost import measure_cost
    from nas_attn.architecture.builder import build_unet

    arch = _arch()
    cpu = torch.device("cpu")
    plain = measure_cost(build_unet(arch), arch, (16, 16), batch_size=2, runtime=Runtime(cpu))
    seen = []
    model = build_unet(arch)
    model.register_forward_pre_hook(lambda m, a: seen.append(
        (a[0].dtype, a[0].is_contiguous(memory_format=torch.channels_last))))
    bf16 = Runtime(cpu, amp=True, channels_last=True, dtype=torch.bfloat16)
    half = measure_cost(model, arch, (16, 16), batch_size=2, runtime=bf16)
    assert seen and all(cl for _, cl in seen)  # every probe pass in channels_last
    assert half.params == plain.params and half.flops == plain.flops
    # saved activations in bfloat16: well under the float32 figure
    assert half.activation_mb < 0.75 * plain.activation_mb
    # flops are per input: a batch of 4 gives the same figure as a batch of 2
    four = measure_cost(build_unet(arch), arch, (16, 16), batch_size=4, runtime=Runtime(cpu))
    assert four.flops == plain.flops


def test_cost_probe_keeps_no_activation_alive():
    """Its activation count must not keep the graph: an identity pack hook made a reference
    cycle the garbage collector cannot see, and one-shot phase 2, which probes every placement,
    grew by ~60 MB a placement on inia19."""
    import gc
    import weakref

    from nas_attn.searching.cost import measure_cost
    from nas_attn.architecture.builder import build_unet

    arch = _arch()
    model = build_unet(arch)
    outputs = []
    for m in model.modules():  # a ReLU saves its own output: the cycle's kind of tensor
        m.register_forward_hook(lambda m, a, out: outputs.append(weakref.ref(out))
                                if isinstance(out, torch.Tensor) else None)
    cost = measure_cost(model, arch, (16, 16), batch_size=2, runtime=Runtime(torch.device("cpu")))
    gc.collect()
    assert cost.activation_mb > 0 and len(outputs) >= 10
    assert [r() for r in outputs] == [None] * len(outputs)  # every pass's output is freed


def test_out_of_memory_in_cost_probe_prunes_and_search_goes_on(session, tmp_path, monkeypatch):
    import optuna
    from optuna.trial import TrialState

    import nas_attn.searching.objective as run_mod
    from nas_attn.searching.run import run_search

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    real = run_mod.measure_cost
    calls = []
    released = []

    def flaky(*a, **k):
        calls.append(1)
        if len(calls) == 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(*a, **k)

    monkeypatch.setattr(run_mod, "measure_cost", flaky)
    real_release = device_mod.release_memory
    monkeypatch.setattr(device_mod, "release_memory",
                        lambda e=None, r=None: released.append(type(e)) or real_release(e, r))
    s = session()
    waiting = [t for t in s.study.trials if t.state == TrialState.WAITING]
    assert waiting, "the space should queue baselines"
    run_search(s, len(waiting) + 1, None)
    trials = s.study.trials
    first = trials[0]
    assert first.state == TrialState.PRUNED
    reason = first.user_attrs["prune_reason"]
    assert "out of memory" in reason and "measuring the cost" in reason and "2.00 GiB" in reason
    assert released == [torch.OutOfMemoryError]
    assert all(t.state not in (TrialState.WAITING, TrialState.RUNNING) for t in trials)
    assert sum(t.state == TrialState.COMPLETE for t in trials) >= 1
    assert "peak_gpu_mb" not in trials[-1].user_attrs  # CPU: no peak-memory counter


def test_other_errors_in_cost_probe_are_not_swallowed(session, tmp_path, monkeypatch):
    import nas_attn.searching.objective as run_mod
    from nas_attn.searching.run import run_search

    def broken(*a, **k):
        raise RuntimeError("shape mismatch in conv")

    monkeypatch.setattr(run_mod, "measure_cost", broken)
    s = session()
    with pytest.raises(RuntimeError, match="shape mismatch"):
        run_search(s, 1, None)


# ----- device selection and precision policy -----------------------------------------------------
@contextlib.contextmanager
def _fake_cuda():
    """Two CUDA GPUs as far as device.py can tell; records set_device and the bf16 question.

    Through torch_state.faked(), not monkeypatch: its undo puts each fake back on its own, sets
    back (never deletes) attributes that torch's modules serve through `__getattr__`, and puts
    back the TF32 switches that `Runtime.create` turns on "on CUDA" through their own setters."""
    seen = {"set_device": [], "bf16_emulation": []}

    def bf16(including_emulation=True):
        seen["bf16_emulation"].append(including_emulation)
        return including_emulation  # a V100/T4: bf16 only by emulation

    with torch_state.faked() as fake:
        fake(torch.cuda, "is_available", lambda: True)
        fake(torch.cuda, "device_count", lambda: 2)
        fake(torch.cuda, "set_device", lambda d: seen["set_device"].append(str(d)))
        fake(torch.cuda, "device", lambda d: contextlib.nullcontext())
        fake(torch.cuda, "is_bf16_supported", bf16)
        yield seen


@pytest.fixture
def fake_cuda():
    with _fake_cuda() as seen:
        yield seen


def test_selected_gpu_becomes_current_and_emulated_bf16_is_not_used(fake_cuda):
    assert str(device_mod.select_device("cuda:1")) == "cuda:1"
    assert fake_cuda["set_device"] == ["cuda:1"]
    device_mod.select_device("cuda")  # no index: the current device stays
    assert fake_cuda["set_device"] == ["cuda:1"]
    rt = Runtime.create("cuda:1", amp=True)
    assert fake_cuda["bf16_emulation"] == [False]
    assert rt.amp and rt.dtype == torch.float16  # emulated bf16 is slower than fp16 + scaler
    assert rt.optimizer_kwargs() == {"fused": True}
    assert Runtime(torch.device("cpu")).optimizer_kwargs() == {}


def test_fake_cuda_leaves_no_torch_global_changed():
    """The fixture's teardown, failing or not, restores all it faked and all that the code
    under test switched (with pytest 9.2, monkeypatch's undo tried to delete
    `matmul.allow_tf32`, failed, and left CUDA faked for the rest of the suite)."""
    before = torch_state.snapshot()
    with _fake_cuda():
        rt = Runtime.create("cuda:1", amp=True)  # turns TF32 on, as on a real GPU
        assert rt.is_cuda and torch.cuda.is_available()
        assert torch_state.snapshot() != before
    assert torch_state.snapshot() == before


def test_tf32_through_the_current_api_without_warnings():
    import warnings

    with torch_state.faked(), warnings.catch_warnings():
        warnings.simplefilter("error")
        device_mod.enable_tf32()
        matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
        if hasattr(matmul, "fp32_precision"):  # torch >= 2.9
            assert matmul.fp32_precision == "tf32"
            assert cudnn.conv.fp32_precision == cudnn.rnn.fp32_precision == "tf32"
        else:
            assert matmul.allow_tf32 and cudnn.allow_tf32


def test_fused_optimizer_on_cuda_runtime():
    from nas_attn.training import TrainConfig
    from nas_attn.training.optim import make_optimizer

    model = torch.nn.Conv2d(2, 3, 3)
    cfg = TrainConfig(device="cpu")
    cuda_rt = Runtime(torch.device("cuda"))  # not created: only its policy is asked
    assert make_optimizer(model, cfg, cuda_rt).defaults["fused"] is True
    assert not make_optimizer(model, cfg, Runtime(torch.device("cpu"))).defaults.get("fused")
    sgd = TrainConfig(device="cpu", optimizer="sgd")
    assert make_optimizer(model, sgd, cuda_rt).defaults["fused"] is True


def test_uint8_masks_become_int64_on_the_device():
    rt = Runtime(torch.device("cpu"))
    batch = rt.to_device({"image": torch.zeros(2, 1, 4, 4),
                          "mask": torch.ones(2, 4, 4, dtype=torch.uint8)})
    assert batch["mask"].dtype == torch.int64 and int(batch["mask"].sum()) == 32
    assert batch["image"].dtype == torch.float32


# ----- non-finite losses: the fp16 scaler skips, divergence only when it persists ---------------
def _discs(n, seed=0, size=32):
    import numpy as np

    from nas_attn.data import SegData

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    images, masks = [], []
    for _ in range(n):
        cy, cx = rng.integers(8, size - 8, 2)
        m = ((yy - cy) ** 2 + (xx - cx) ** 2 < 36).astype(np.int64)
        images.append((0.3 + 0.4 * m + 0.05 * rng.standard_normal((size, size)))
                      .astype(np.float32)[None])
        masks.append(m)
    return SegData(images=images, masks=masks, names=[f"d{i}" for i in range(n)],
                   spatial_dims=2, in_channels=1, classes=2)


def _train_with_nan(monkeypatch, bad_steps, runtime, **kw):
    from nas_attn.architecture.description import UNetArch
    from nas_attn.data import DataConfig
    from nas_attn.training import TrainConfig, loop, train
    from nas_attn.training.losses import SegLoss

    calls = {"n": 0}

    class NaNAt(SegLoss):
        def forward(self, outs, y):
            calls["n"] += 1
            loss = super().forward(outs, y)
            return loss * float("nan") if calls["n"] in bad_steps else loss

    monkeypatch.setattr(loop, "SegLoss", NaNAt)
    dcfg = DataConfig(patch_size=[32], augment={"flips": False, "rot90": False, "affine": False,
                                                "intensity": False})
    cfg = TrainConfig(epochs=2, batch_size=4, samples_per_epoch=24, warmup_epochs=0.5,
                      device="cpu")
    return train(UNetArch(depth=2, widths=(4, 8, 8)), _discs(12), _discs(2, seed=1), dcfg, cfg,
                 runtime=runtime, preview=False, **kw)


FP16 = Runtime(torch.device("cpu"), amp=True, dtype=torch.float16)


def test_fp16_scaler_skips_a_few_non_finite_steps(monkeypatch):
    from nas_attn.training import loop

    assert FP16.scaler().is_enabled()
    res = _train_with_nan(monkeypatch, {2, 3, 4, 5, 7, 8, 9, 10}, FP16)  # runs of 4 < 5
    assert res.steps == 12
    assert all(torch.isfinite(p).all() for p in res.model.parameters())
    assert all(math.isfinite(h["train_loss"]) for h in res.history)
    assert loop.NONFINITE_PATIENCE == 5


def test_fp16_divergence_when_non_finite_persists(monkeypatch):
    from nas_attn.errors import DivergedError

    with pytest.raises(DivergedError, match=r"epoch 1, step 3 .*stayed non-finite for 5 steps"):
        _train_with_nan(monkeypatch, {3, 4, 5, 6, 7}, FP16)


def test_without_scaler_first_non_finite_loss_diverges(monkeypatch):
    from nas_attn.errors import DivergedError

    bf16 = Runtime(torch.device("cpu"), amp=True, dtype=torch.bfloat16)
    assert not bf16.scaler().is_enabled()
    with pytest.raises(DivergedError, match=r"epoch 1, step 2 \(global step 2"):
        _train_with_nan(monkeypatch, {2}, bf16)


def test_compile_option_goes_through(monkeypatch):
    """`compile_model=True` trains through Runtime.compile (here dynamo's eager backend: the
    plumbing, without minutes of C++ compilation on a small CPU)."""
    compiled = []

    def eager(self, fn, mode=None):
        compiled.append(fn)
        return torch.compile(fn, backend="eager")

    monkeypatch.setattr(Runtime, "compile", eager)
    res = _train_with_nan(monkeypatch, set(), Runtime(torch.device("cpu")), compile_model=True)
    assert len(compiled) == 1 and res.steps == 12
    assert math.isfinite(res.history[-1]["train_loss"])


# ----- one shape for cuDNN: windows padded to the patch, last window group filled up ----------
@pytest.mark.parametrize("shape", [(8, 8), (12, 40), (45, 38), (16, 16), (10, 12, 30)])
def test_sliding_window_forwards_see_one_shape(shape):
    from nas_attn.data import sliding_window_predict

    torch.manual_seed(0)
    dims = len(shape)
    conv = (torch.nn.Conv2d if dims == 2 else torch.nn.Conv3d)(2, 3, 1)
    patch = [16] * dims
    x = torch.randn((2, 2) + shape)
    seen = []
    conv.register_forward_hook(lambda m, a, out: seen.append(tuple(a[0].shape)))
    y = sliding_window_predict(conv, x, patch, overlap=0.5, batch=3, fill=True)  # CUDA's default
    with torch.no_grad():
        torch.testing.assert_close(y.float(), conv(x), atol=1e-5, rtol=1e-5)
    shapes = set(seen[:-1])  # the last entry is the reference call above
    seen.clear()  # on the CPU (the default there) no filler: every window once, nothing more
    torch.testing.assert_close(sliding_window_predict(conv, x, patch, overlap=0.5, batch=3), y)
    windows = math.prod(len(range(0, max(s - 16, 0) + 8, 8)) if s > 16 else 1 for s in shape)
    assert sum(n[0] for n in seen) == 2 * windows
    assert len(shapes) == 1, shapes
    (only,) = shapes
    assert only[2:] == tuple(patch)
    if all(s <= 16 for s in shape):
        assert only[0] == 2  # one window: no filler patches
    else:
        assert only[0] % 2 == 0 and only[0] <= 3 * 2


def test_sliding_window_pads_aux_like_the_image():
    from nas_attn.data import sliding_window_predict

    class WithAux(torch.nn.Module):
        def forward(self, x, aux=None):
            assert x.shape == aux.shape and x.shape[2:] == (16, 16)
            return x * 2 + aux

    x, a = torch.randn(1, 1, 10, 40), torch.randn(1, 1, 10, 40)
    y = sliding_window_predict(WithAux(), x, (16, 16), aux=a, overlap=0.25)
    torch.testing.assert_close(y, x * 2 + a, atol=1e-5, rtol=1e-5)


# ----- loader workers --------------------------------------------------------------------------
def test_loader_workers_default_by_device_and_settable(monkeypatch):
    from nas_attn.data import DataConfig, load_data, loaders, make_loaders

    cfg = DataConfig(builtin_n=6, builtin_size=24)
    tr, va = load_data(cfg)
    assert make_loaders(tr, va, cfg, batch_size=2, seed=0)[0].num_workers == 0
    monkeypatch.setattr(loaders.os, "sched_getaffinity", lambda pid: set(range(16)))
    cuda = make_loaders(tr, va, cfg, batch_size=2, seed=0, device_is_cuda=True)[0]
    assert cuda.num_workers == 8 and cuda.worker_init_fn is loaders._worker_init
    assert cuda.persistent_workers and cuda.pin_memory
    two = DataConfig(builtin_n=6, builtin_size=24, num_workers=2)
    assert make_loaders(tr, va, two, batch_size=2, seed=0, device_is_cuda=True)[0].num_workers == 2
    zero = DataConfig(builtin_n=6, builtin_size=24, num_workers=0)
    assert make_loaders(tr, va, zero, batch_size=2, seed=0, device_is_cuda=True)[0].num_workers == 0


class _Threads(torch.utils.data.Dataset):
    def __len__(self):
        return 2

    def __getitem__(self, i):
        import cv2

        return torch.tensor([torch.get_num_threads(), cv2.getNumThreads()])


def test_loader_workers_run_one_thread(monkeypatch):
    import cv2

    from nas_attn.data import DataConfig, load_data, make_loaders

    monkeypatch.setattr(cv2, "setNumThreads", cv2.setNumThreads)  # restored after the test
    before = cv2.getNumThreads()
    cfg = DataConfig(builtin_n=6, builtin_size=24, num_workers=1)
    tr, va = load_data(cfg)
    make_loaders(tr, va, cfg, batch_size=2, seed=0)
    dl = torch.utils.data.DataLoader(_Threads(), batch_size=2, num_workers=1)
    (batch,) = list(dl)
    assert batch.tolist() == [[1, 1], [1, 1]]
    cv2.setNumThreads(before)


def test_num_workers_and_compile_flags_reach_the_loop(tmp_path, monkeypatch):
    from nas_attn.cli import main
    from nas_attn.training import loop

    compiled = []
    monkeypatch.setattr(Runtime, "compile", lambda self, fn, mode=None: compiled.append(fn)
                        or torch.compile(fn, backend="eager"))
    seen = []
    real = loop.get_loaders

    def spy(train_data, val_data, data_cfg, **kw):
        seen.append(data_cfg.num_workers)
        return real(train_data, val_data, data_cfg, **kw)

    monkeypatch.setattr(loop, "get_loaders", spy)
    arch = tmp_path / "a.json"
    from nas_attn.architecture.description import UNetArch

    arch.write_text(UNetArch(depth=1, widths=(4, 8)).to_json())
    with contextlib.suppress(SystemExit):
        main(["train", "--arch", str(arch), "--epochs", "1", "--num-workers", "0", "--compile",
              "--out", str(tmp_path / "out"), "--device", "cpu", "--runs-dir", str(tmp_path)])
    assert seen == [0] and len(compiled) == 1
    assert (tmp_path / "out" / "metrics.json").exists()


# ----- default spaces: tensor-core friendly widths ------------------------------------------
def test_ready_2d_spaces_use_widths_in_multiples_of_8():
    import yaml

    from nas_attn.searching.space import SPACES_DIR

    from nas_attn.searching.space_files import load_space

    for path in sorted(SPACES_DIR.glob("*.yaml")):
        text = path.read_text()
        space = load_space(path.stem)
        if space.spatial_dims == 3 or "not a multiple of 8" in text:
            continue  # 3D, or the file says why not
        m = space.macro
        widths = {w for d in m.depth for b in m.base_width for w in m.widths(d, b)}
        assert all(w % 8 == 0 for w in widths), f"{path.name}: widths {sorted(widths)}"
        options = yaml.safe_load(text).get("options") or {}
        for module, opts in options.items():
            for key in ("inter_channels",):
                values = opts.get(key, []) if isinstance(opts, dict) else []
                assert all(v % 8 == 0 for v in values if isinstance(v, int) and v), \
                    f"{path.name}: {module}.{key} {values}"
