"""utils/amp.py: autocast by name, native-bf16 detection and the --precision choice."""
import pytest
import torch

from utils import amp
from utils.amp import Precision, cpu_flags, cpu_native_bf16, resolve_precision
from utils.errors import UserError

CPU = torch.device('cpu')


@pytest.fixture
def no_bf16_cpu(monkeypatch):
    """A CPU like this project's machine: AVX-512 with VNNI, no bf16 instructions."""
    monkeypatch.setattr(amp, 'cpu_flags', lambda: frozenset({'avx2', 'avx512f', 'avx512_vnni'}))
    monkeypatch.setattr(torch.backends.cpu, 'get_cpu_capability', lambda: 'AVX512')


def test_cpu_flags_reads_the_flags_line(tmp_path):
    info = tmp_path / 'cpuinfo'
    info.write_text("processor\t: 0\nmodel name\t: X\nflags\t\t: fpu avx512f amx_bf16 avx512_bf16\n\n")
    assert cpu_flags(str(info)) == {'fpu', 'avx512f', 'amx_bf16', 'avx512_bf16'}
    assert cpu_flags(str(tmp_path / 'absent')) == frozenset()


def test_auto_is_fp32_without_native_bf16_and_says_why(no_bf16_cpu):
    assert cpu_native_bf16() is None
    got = resolve_precision('auto', CPU)
    assert got == Precision(None, "auto: no native bf16 on this cpu (bf16 would be emulated, slower than fp32)",
                            auto=True)
    assert got.name == 'fp32'


def test_auto_for_the_viewer_is_int8_without_native_bf16(no_bf16_cpu):
    got = resolve_precision('auto', CPU, int8=True)
    assert (got.amp, got.int8, got.auto, got.name) == (None, True, True, 'int8')
    assert got.reason.startswith("auto: no native bf16 on this CPU; int8")


def test_int8_is_the_viewers_cpu_choice_only(no_bf16_cpu):
    assert resolve_precision('int8', CPU, int8=True) == Precision(None, "asked for", int8=True)
    with pytest.raises(UserError, match=r"^--precision int8 is for the CPU; on cuda use bf16 or fp32$"):
        resolve_precision('int8', torch.device('cuda'), int8=True)
    with pytest.raises(UserError, match=r"^--precision must be one of fp32, bf16, fp16, auto, not 'int8'$"):
        resolve_precision('int8', CPU)  # demo.py / test.py: no int8
    assert resolve_precision('auto', torch.device('cuda'), int8=True).amp == 'bf16'


@pytest.mark.parametrize('flags,capability,reason', [
    ({'avx512f', 'avx512_bf16'}, 'AVX512', 'avx512_bf16'),
    ({'avx512f', 'amx_bf16', 'avx512_bf16'}, 'AVX512', 'avx512_bf16, amx_bf16'),
    ({'avx512f'}, 'AVX512_BF16', 'torch capability AVX512_BF16'),
])
def test_auto_is_bf16_with_native_bf16(monkeypatch, flags, capability, reason):
    monkeypatch.setattr(amp, 'cpu_flags', lambda: frozenset(flags))
    monkeypatch.setattr(torch.backends.cpu, 'get_cpu_capability', lambda: capability)
    assert cpu_native_bf16() == reason
    assert resolve_precision('auto', CPU) == Precision('bf16', f"auto: the CPU has native bf16 ({reason})", auto=True)
    assert resolve_precision('auto', CPU, int8=True).amp == 'bf16'  # native bf16 first


def test_auto_on_cuda_is_bf16(no_bf16_cpu):
    assert resolve_precision('auto', torch.device('cuda', 0)).amp == 'bf16'


def test_explicit_choices(no_bf16_cpu):
    assert resolve_precision('fp32', CPU).amp is None
    assert resolve_precision('bf16', CPU).amp == 'bf16'  # asked for: allowed even where emulated
    assert resolve_precision('fp16', torch.device('cuda')).amp == 'fp16'


@pytest.mark.parametrize('choice,message', [
    ('fp16', "--precision fp16 is for CUDA: on the CPU it is several times slower than fp32; use fp32 or bf16"),
    ('half', "--precision must be one of fp32, bf16, fp16, auto, not 'half'"),
])
def test_refusals_are_one_line(choice, message):
    with pytest.raises(UserError) as e:
        resolve_precision(choice, CPU)
    assert str(e.value) == message and '\n' not in message


def test_autocast_names():
    x = torch.randn(4, 4)
    with amp.autocast(CPU, 'bf16'):
        assert (x @ x).dtype == torch.bfloat16
    with amp.autocast(CPU, None):
        assert (x @ x).dtype == torch.float32
    with pytest.raises(ValueError):
        amp.autocast(CPU, 'fp8')
