import torch

from utils.coord import make_cell, make_coord, to_pixel_samples


def test_make_coord_pixel_centres():
    c = make_coord((2, 4))
    assert c.shape == (8, 2)
    # row axis first: centres of 2 rows are -0.5, 0.5; of 4 columns -0.75, -0.25, 0.25, 0.75
    assert torch.equal(c[0], torch.tensor([-0.5, -0.75]))
    assert torch.equal(c[1], torch.tensor([-0.5, -0.25]))
    assert torch.equal(c[7], torch.tensor([0.5, 0.75]))
    assert make_coord((3, 5), flatten=False).shape == (3, 5, 2)


def test_make_coord_ranges_and_dtype():
    c = make_coord((2,), ranges=[(0, 1)])
    assert torch.allclose(c[:, 0], torch.tensor([0.25, 0.75]))
    assert c.dtype == torch.float32


def test_to_pixel_samples_order_matches_coord():
    img = torch.arange(2 * 3 * 4, dtype=torch.float32).view(2, 3, 4)
    coord, rgb = to_pixel_samples(img)
    assert coord.shape == (12, 2) and rgb.shape == (12, 2)
    # sample k is pixel (k // 4, k % 4)
    k = 6
    assert torch.equal(rgb[k], img[:, k // 4, k % 4])
    assert torch.equal(coord[k], make_coord((3, 4), flatten=False)[k // 4, k % 4])


def test_make_cell():
    coord = make_coord((10, 20))
    cell = make_cell(coord, (10, 20))
    assert torch.equal(cell[0], torch.tensor([0.2, 0.1]))
    assert cell.shape == coord.shape
