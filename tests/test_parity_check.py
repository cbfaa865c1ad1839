"""scripts/parity_check.py: the vectors check any device can run (the GPU's parity check)."""
import os

import pytest

from tests.conftest import shared_path
from tests.helpers import load_script, one_thread  # noqa: F401  (fixture)
from utils.errors import UserError

pytestmark = pytest.mark.usefixtures('one_thread')


def test_every_case_of_the_chosen_folders_is_checked_and_within_the_tolerance(capsys):
    reference = os.path.dirname(shared_path('reference', 'srno-parity'))
    load_script('scripts/parity_check.py').main(['--device', 'cpu', '--no-bf16', '--reference', reference,
                                                 '--only', 'srno-parity,lmf-parity'])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith('3 vectors files on CPU')
    cases = [line.split()[:2] for line in lines[1:-1]]
    assert cases == [['lmliif-edsr-baseline', k] for k in ('24x24', '30x41', 'x8-cellclip')] \
        + [['lmlte-edsr-baseline', k] for k in ('24x24', '30x41', 'x8-cellclip')] \
        + [['srno-edsr-baseline', k] for k in ('24x24', '30x41', 'x8-cellclip', '40x40-rows16')]
    assert 'encode + query' in lines[1]                                        # LMF: points, both calls
    assert not any('encode + query' in line for line in lines if line.startswith('srno'))  # grid layout: forward
    worst = float(lines[-1].split()[3])
    assert 1e-9 < worst < 1e-6 and lines[-1].endswith('tolerance 1e-05')


def test_a_case_over_the_tolerance_is_one_line_naming_the_file():
    reference = os.path.dirname(shared_path('reference', 'srno-parity'))
    with pytest.raises(UserError, match=r'^srno-edsr-baseline.vectors.pt misses the vectors on CPU: .* > 1e-09$'):
        load_script('scripts/parity_check.py').main(['--device', 'cpu', '--no-bf16', '--reference', reference,
                                                     '--only', 'srno-parity', '--tol', '1e-9'])
    with pytest.raises(UserError, match='^no vectors found under .* for --only nothing$'):
        load_script('scripts/parity_check.py').main(['--device', 'cpu', '--reference', reference, '--only', 'nothing'])
