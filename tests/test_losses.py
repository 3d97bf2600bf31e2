import math

import pytest
import torch

from scg_core import ModularAE, ModularAEConfig
from scg_core.model import functional as Fn
from scg_core.model.pairs import context_side, neighbour_deltas, sample_patch_pairs
from scg_core.model.losses import (
    EquivarianceCodebook,
    equivariance_loss,
    kernel_copy_loss,
    reconstruction_loss,
    soft_best_transforms,
    symmetry_loss,
    transformed_kernels,
)


def random_codebook(k=3, l=4, grid=(3, 4, 8), seed=0):
    torch.manual_seed(seed)
    cb = EquivarianceCodebook(k, l, grid, translation_range=(-2.0, 2.0))
    with torch.no_grad():
        cb.matrices.normal_()
    return cb


def cyclic_shift(l, steps):
    """P with P e_n = e_{n+steps}: the channel permutation a rotation by steps·(2π/l) causes."""
    return torch.roll(torch.eye(l), steps, dims=0)


def test_reconstruction_loss_ignores_the_border():
    a, b = torch.zeros(1, 3, 10, 10), torch.zeros(1, 3, 10, 10)
    a[..., 0, :] = 5.0  # only the border differs
    assert reconstruction_loss(a, b, border=1) == 0
    assert reconstruction_loss(a, b) > 0
    with pytest.raises(ValueError, match="differ in shape"):
        reconstruction_loss(a, b[..., :9])


def test_interpolation_returns_the_grid_matrices_at_grid_points():
    cb = random_codebook()
    tx, ty, th = cb.grid_points()
    for i, j, t in [(0, 0, 0), (2, 3, 7), (1, 2, 3)]:
        delta = torch.tensor([[tx[i], ty[j], th[t]]])
        torch.testing.assert_close(cb(delta)[0], cb.matrices[:, i, j, t])


def test_rotation_is_periodic_and_interpolates_across_2pi():
    cb = random_codebook()
    d = lambda theta: torch.tensor([[0.5, -1.0, theta]])
    torch.testing.assert_close(cb(d(2 * math.pi)), cb(d(0.0)))
    torch.testing.assert_close(cb(d(-math.pi / 2)), cb(d(3 * math.pi / 2)))
    # halfway between the last grid angle (7/8·2π) and 2π ≡ 0: the mean of those two matrices
    last, first = cb(d(7 / 8 * 2 * math.pi)), cb(d(0.0))
    torch.testing.assert_close(cb(d(15 / 16 * 2 * math.pi)), (last + first) / 2)


def test_translation_is_linear_inside_and_clamped_outside():
    cb = random_codebook()
    a, b = cb(torch.tensor([[-2.0, 0.0, 0.0]])), cb(torch.tensor([[0.0, 0.0, 0.0]]))
    torch.testing.assert_close(cb(torch.tensor([[-1.0, 0.0, 0.0]])), (a + b) / 2)
    torch.testing.assert_close(cb(torch.tensor([[-9.0, 0.0, 0.0]])), a)


def test_equivariance_loss_is_zero_for_features_that_transform_by_M():
    cb = random_codebook()
    delta = torch.rand(64, 3) * torch.tensor([4.0, 4.0, 2 * math.pi]) - torch.tensor([2.0, 2.0, 0.0])
    M = cb(delta)
    f = torch.randn(64, 3, 4)
    f_prime = torch.einsum("nkij,nkj->nki", M, f)
    assert equivariance_loss(f, f_prime, M) < 1e-10
    assert equivariance_loss(f.reshape(64, 12), f_prime.reshape(64, 12), M, relative=True) < 1e-10
    assert equivariance_loss(f, torch.randn_like(f_prime), M) > 1.0


def test_equivariance_of_a_real_encoder_with_rotated_kernel_copies():
    # One module whose 4 kernels are 90° rotations of one kernel: rotating the image by 90°
    # permutes its channels, so with that permutation in the codebook L_equ vanishes.
    ae = ModularAE(ModularAEConfig(num_modules=1, module_channels=4, parameterization="single", kernel_size=21, stride=4))
    torch.manual_seed(0)
    base = torch.randn(3, 21, 21)
    with torch.no_grad():
        ae.kernels.copy_(torch.stack([torch.rot90(base, n, dims=(-2, -1)) for n in range(4)]))
    patches = torch.rand(8, 3, 25, 25)
    rotated = torch.rot90(patches, 1, dims=(-2, -1))
    centre = lambda x: ae.encode(x)[:, :, 3, 3]  # cell 3 of a 25-px patch sees exactly its centre
    cb = EquivarianceCodebook(1, 4, (1, 1, 4))
    with torch.no_grad():
        cb.matrices[0, 0, 0, 1] = cyclic_shift(4, 1)  # θ = π/2
    delta = torch.tensor([[0.0, 0.0, math.pi / 2]]).expand(8, 3)
    loss = equivariance_loss(centre(patches), centre(rotated), cb(delta), relative=True)
    assert loss < 1e-10
    with torch.no_grad():
        cb.matrices[0, 0, 0, 1] = torch.eye(4)
    assert equivariance_loss(centre(patches), centre(rotated), cb(delta), relative=True) > 0.1


def permutation_codebook(l=4):
    """A module whose channels are rotated copies: M(θ = j·2π/l) = P^j."""
    cb = EquivarianceCodebook(1, l, (3, 3, l))
    with torch.no_grad():
        for j in range(l):
            cb.matrices[0, :, :, j] = cyclic_shift(l, j)
    return cb


def test_symmetry_loss_is_small_for_transformed_copies_and_large_for_unrelated_channels():
    copies = symmetry_loss(permutation_codebook(), temperature=0.05)
    unrelated = symmetry_loss(EquivarianceCodebook(1, 4, (3, 3, 4)), temperature=0.05)  # identity: nothing maps n to m
    assert copies < 1e-3
    assert unrelated > 4 * 3  # every off-diagonal pair misses: ||e_m - e_n||² = 2 each, 12 pairs


def test_symmetry_best_transform_finds_the_rotation_between_channels():
    delta = soft_best_transforms(permutation_codebook(), temperature=0.05)
    # channel n → channel m needs (m - n) quarter turns
    for m in range(4):
        for n in range(4):
            expected = ((m - n) % 4) * math.pi / 2
            got = delta[0, m, n, 2].item()
            assert min(abs(got - expected), 2 * math.pi - abs(got - expected)) < 1e-3
            assert abs(delta[0, m, n, 0]) < 1e-6 and abs(delta[0, m, n, 1]) < 1e-6


def test_symmetry_sign_is_configurable_and_matters():
    cb = permutation_codebook()
    assert symmetry_loss(cb, temperature=0.05, sign=-1) > 1.0  # the printed sign picks the worst δ
    with pytest.raises(ValueError, match="sign"):
        symmetry_loss(cb, sign=0.5)
    with pytest.raises(ValueError, match="temperature"):
        symmetry_loss(cb, temperature=0)


def test_gradients_reach_the_kernels_and_the_codebook():
    torch.manual_seed(0)
    ae = ModularAE(num_modules=2, module_channels=3)
    cb = EquivarianceCodebook(2, 3, (3, 3, 4))
    patches = torch.rand(4, 3, 25, 25)
    rotated = torch.rot90(patches, 1, dims=(-2, -1))
    delta = torch.tensor([[0.0, 0.0, math.pi / 2]]).expand(4, 3)
    f, f_prime = ae.encode(patches)[:, :, 3, 3], ae.encode(rotated)[:, :, 3, 3]
    recon = reconstruction_loss(ae.decode(ae.encode(patches), (25, 25)), ae.normalize(patches), border=4)
    loss = recon + equivariance_loss(f, f_prime, cb(delta), relative=True) + symmetry_loss(cb)
    loss.backward()
    for name, p in ae.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert cb.matrices.grad.abs().sum() > 0


def test_codebook_matmul_equals_the_corner_gather_and_its_gradient():
    # forward() multiplies dense trilinear weights with the codebook (no scatter in backward);
    # sample() gathers the 8 corners: both are the same interpolation
    cb = random_codebook(k=4, l=3, grid=(5, 4, 8))
    delta = torch.rand(200, 3) * torch.tensor([6.0, 6.0, 4 * math.pi]) - torch.tensor([3.0, 3.0, math.pi])
    dense = cb(delta)
    gathered = cb.sample(delta[:, None, :].expand(-1, 4, -1), torch.arange(4)[None, :])
    torch.testing.assert_close(dense, gathered, atol=1e-6, rtol=1e-6)
    (g_dense,) = torch.autograd.grad(dense.square().sum(), cb.matrices)
    (g_gather,) = torch.autograd.grad(gathered.square().sum(), cb.matrices)
    torch.testing.assert_close(g_dense, g_gather, atol=1e-5, rtol=1e-5)


def test_codebook_read_is_the_same_interpolation_as_forward():
    # read() sums the 8 corners of a row with one weighted embedding_bag: the same clamping in
    # translation and wrapping in θ as forward()'s dense weights, values and gradients
    cb = random_codebook(k=3, l=4, grid=(9, 7, 8))
    delta = torch.rand(300, 3) * torch.tensor([8.0, 8.0, 6 * math.pi]) - torch.tensor([4.0, 4.0, 3 * math.pi])
    read, dense = cb.read(delta), cb(delta)
    torch.testing.assert_close(read, dense, atol=1e-5, rtol=1e-5)
    (g_read,) = torch.autograd.grad(read.square().sum(), cb.matrices)
    (g_dense,) = torch.autograd.grad(dense.square().sum(), cb.matrices)
    torch.testing.assert_close(g_read, g_dense, atol=1e-4, rtol=1e-4)


def test_neighbourhood_prediction_starts_as_interpolation_and_is_exact_for_a_whole_cell_shift():
    # With the tent start, Σ_n M(δ_n) f_n is the bilinear interpolation of the context's features: a
    # shift by whole code cells makes I' the patch of one cell, whose feature it then returns exactly
    torch.manual_seed(0)
    ae = ModularAE(ModularAEConfig(num_modules=4, module_channels=3))
    stride, K = ae.config.stride, 3
    cb = EquivarianceCodebook(4, 3, (17, 17, 8), (-8.0, 8.0), tent=stride)  # grid points 1 px apart
    img = torch.rand(3, 90, 90)
    delta = torch.tensor([[-4.0, 0.0, 0.0], [0.0, 4.0, 0.0], [4.0, -4.0, 0.0], [2.0, 0.0, 0.0]])
    side = context_side(21, stride, K)
    P, Q, _ = sample_patch_pairs([img], 4, torch.Generator().manual_seed(0), max_shift=4.0, delta=delta, context_patch=side)
    kernel = Fn.compose_kernel(ae.factor_weights(), ae.config)
    f = Fn.context_features(kernel, P, ae.mean, ae.std, stride)
    torch.testing.assert_close(f[:, 4], Fn.centre_features(kernel, P[..., 4:25, 4:25], ae.mean, ae.std), atol=1e-4, rtol=1e-4)
    f_t = Fn.centre_features(kernel, Q, ae.mean, ae.std)
    deltas = neighbour_deltas(delta, stride, K)
    matrices = cb.read(deltas.reshape(-1, 3)).view(4, 9, 4, 3, 3)
    predicted = torch.einsum("nqkij,nqkj->nki", matrices, f.view(4, 9, 4, 3)).reshape(4, -1)
    torch.testing.assert_close(predicted[:3], f_t[:3], atol=1e-4, rtol=1e-4)  # whole cells: exact
    halfway = (f[3, 4] + f[3, 3]) / 2  # I' centred 2 px left: the mean of the centre and its left neighbour
    torch.testing.assert_close(predicted[3], halfway, atol=1e-4, rtol=1e-4)
    loss = equivariance_loss(f[:3], f_t[:3], matrices[:3], relative=True)
    assert loss.item() < 1e-8
    assert equivariance_loss(f, f_t, matrices, relative=True).item() > 1e-4  # half a cell is not exact


def test_transformed_kernels_respond_to_the_image_as_the_kernel_to_the_transformed_image():
    # ⟨K_m, L_δ I⟩ = ⟨K_n, I⟩ for K_n = transformed_kernels(K_m, δ): the direction L_sym's δ*_mn means
    torch.manual_seed(0)
    kernel = torch.zeros(2, 3, 21, 21, dtype=torch.float64)
    kernel[..., 4:17, 4:17] = torch.randn(2, 3, 13, 13, dtype=torch.float64)  # room to move inside the window
    img = torch.rand(3, 80, 80, dtype=torch.float64)
    zero, one = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    for d in ([0.0, 0.0, math.pi / 2], [1.0, -2.0, 0.0], [2.0, 1.0, math.pi], [-2.0, 1.0, math.pi / 2]):
        delta = torch.tensor([d], dtype=torch.float64)
        P, Q, _ = sample_patch_pairs([img], 6, torch.Generator().manual_seed(1), delta=delta.expand(6, 3))
        moved = transformed_kernels(kernel, delta.view(1, 1, 3).expand(2, 1, 3))[:, 0]
        torch.testing.assert_close(Fn.centre_features(moved, P, zero, one), Fn.centre_features(kernel, Q, zero, one),
                                   atol=1e-10, rtol=0)


def test_kernel_copy_loss_vanishes_for_rotated_copies_and_not_for_unrelated_kernels():
    torch.manual_seed(0)
    base = torch.randn(3, 21, 21)
    copies = torch.stack([torch.rot90(base, n, dims=(-2, -1)) for n in range(4)])  # one module of 4
    best = soft_best_transforms(permutation_codebook(), temperature=0.01).detach()  # δ*_mn: (m − n)·90°
    torch.testing.assert_close(best[0, 1, 0], torch.tensor([0.0, 0.0, math.pi / 2]), atol=1e-4, rtol=0)
    assert kernel_copy_loss(copies, best, 4) < 1e-6
    assert kernel_copy_loss(torch.randn(4, 3, 21, 21), best, 4) > 0.5
    kernels = copies.clone().requires_grad_()
    kernel_copy_loss(kernels + 0.1 * torch.randn_like(copies), best, 4).backward()
    assert kernels.grad.abs().sum() > 0
