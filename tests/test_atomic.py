import os
import stat

import pytest

from utils.atomic import atomic_open


def test_replaces_only_on_success_with_normal_permissions(tmp_path):
    path = tmp_path / 'out.txt'
    path.write_text('old')
    with pytest.raises(RuntimeError):
        with atomic_open(path, 'w') as f:
            f.write('half')
            raise RuntimeError('crash while writing')
    assert path.read_text() == 'old' and os.listdir(tmp_path) == ['out.txt']
    with atomic_open(path, 'w') as f:
        f.write('new')
    assert path.read_text() == 'new' and os.listdir(tmp_path) == ['out.txt']
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~mask  # not mkstemp's 0600
