"""RCAN-LIIF against the authors' vectors, once an `rcan` encoder exists (a later issue adds it)."""
import os

import pytest

import models
from tests.conftest import shared_path
from tests.helpers import EXTRA_PARITY, check_extra_parity


@pytest.mark.skipif('rcan' not in models.list_models(),
                    reason="no 'rcan' encoder yet (a later issue adds it): liif-extra-parity/rcan-liif is unchecked")
def test_rcan_liif_matches_the_authors_vectors():
    check_extra_parity(os.path.join(shared_path(*EXTRA_PARITY), 'rcan-liif'))
