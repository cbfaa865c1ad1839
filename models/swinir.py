"""SwinIR (Liang et al. 2021) as the feature extractor registered as `swinir` by LTE and LMF.

Written from docs/SWINIR.md: shifted-window transformer blocks (Swin, Liu et al. 2021) grouped
into residual groups, with the authors' state-dict keys (buffers included). The input is mirrored
at the bottom/right to a multiple of the window and the result is NOT cropped: a 12 x 10 input
gives a 16 x 16 feature map, as the authors' encoder does.
"""
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from models.registry import register
from utils.errors import UserError

OUT_DIM = 64  # the authors' fixed "num_feat": the feature width whatever the other arguments
MASKED = -100.0  # the authors' additive mask value (not -inf: masked weights are subnormal, not zero)
# shift masks made in one forward, by (h, w, ws, shift): the blocks of every stage share them
MaskCache = Dict[Tuple[int, int, int, int], torch.Tensor]


def relative_position_index(ws: int) -> torch.Tensor:
    """(ws^2, ws^2) int64: the bias-table row of token pair (p, q) of a ws x ws window (row-major tokens)."""
    rows = torch.arange(ws).repeat_interleave(ws)
    cols = torch.arange(ws).repeat(ws)
    d_row = rows[:, None] - rows[None, :] + ws - 1
    d_col = cols[:, None] - cols[None, :] + ws - 1
    return d_row * (2 * ws - 1) + d_col


def window_partition(x: torch.Tensor, ws: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * nW, ws^2, C): windows image-major, then window row, then window column."""
    b, h, w, c = x.shape
    x = x.view(b, h // ws, ws, w // ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, ws * ws, c)


def window_merge(windows: torch.Tensor, ws: int, h: int, w: int) -> torch.Tensor:
    """Inverse of window_partition: (B * nW, ws^2, C) -> (B, H, W, C)."""
    c = windows.shape[-1]
    x = windows.view(-1, h // ws, w // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, h, w, c)


def shift_mask(h: int, w: int, ws: int, shift: int, device: Optional[torch.device] = None) -> torch.Tensor:
    """(nW, ws^2, ws^2) float32 additive mask of the shifted windows of an h x w map: 0 within a region, -100 across.

    Regions (in the rolled frame) are the bands [0, n - ws), [n - ws, n - shift), [n - shift, n) of
    rows times those of columns: a rolled window that straddles them mixes far-apart image parts.
    """
    def bands(n: int) -> torch.Tensor:
        idx = torch.arange(n, device=device)
        return (idx >= n - ws).long() + (idx >= n - shift).long()
    labels = 3 * bands(h)[:, None] + bands(w)[None, :]
    win = window_partition(labels[None, :, :, None], ws).squeeze(-1)
    same = win[:, :, None] == win[:, None, :]
    return torch.zeros(same.shape, dtype=torch.float32, device=device).masked_fill_(~same, MASKED)


class DropPath(nn.Module):
    """Stochastic depth: in training, zero a sample's residual branch with probability p (rescaling the rest)."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        keep = 1 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep


class Mlp(nn.Module):
    """fc1, exact GELU, fc2 (dropouts after each)."""

    def __init__(self, dim: int, hidden: int, drop: float):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class WindowAttention(nn.Module):
    """Multi-head self-attention inside each window, with a learned relative position bias per head."""

    def __init__(self, dim: int, ws: int, num_heads: int, qkv_bias: bool, qk_scale: Optional[float],
                 attn_drop: float, proj_drop: float):
        super().__init__()
        self.num_heads = num_heads
        self.scale = qk_scale or (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * ws - 1) ** 2, num_heads))
        self.register_buffer('relative_position_index', relative_position_index(ws))
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, z: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """z (B * nW, N, C) -> (B * nW, N, C); mask (nW, N, N) is added to every image's windows."""
        bw, n, c = z.shape
        nh = self.num_heads
        # channels are part-major (all q, all k, all v), then head, then element
        q, k, v = self.qkv(z).reshape(bw, n, 3, nh, c // nh).permute(2, 0, 3, 1, 4).unbind(0)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        attn = attn + bias.view(n, n, nh).permute(2, 0, 1).unsqueeze(0)
        if mask is not None:
            nw = mask.shape[0]
            attn = (attn.view(bw // nw, nw, nh, n, n) + mask[None, :, None]).view(bw, nh, n, n)
        attn = self.attn_drop(attn.softmax(dim=-1))
        out = (attn @ v).transpose(1, 2).reshape(bw, n, c)
        return self.proj_drop(self.proj(out))


class SwinBlock(nn.Module):
    """LN, (shifted-)window attention, residual; LN, MLP, residual.

    Shifted blocks keep the authors' `attn_mask` buffer, made for the design size img_size; any
    other map size gets its mask computed in forward, once per SwinIR forward for all its blocks
    (nothing kept between calls).
    """

    def __init__(self, dim: int, img_size: Tuple[int, int], num_heads: int, ws: int, shift: int,
                 mlp_ratio: float, qkv_bias: bool, qk_scale: Optional[float], drop: float,
                 attn_drop: float, drop_path: float):
        super().__init__()
        if min(img_size) <= ws:  # the authors' rule: a design size within one window is not shifted
            ws, shift = min(img_size), 0
        self.img_size, self.ws, self.shift = img_size, ws, shift
        if shift:
            self.register_buffer('attn_mask', shift_mask(img_size[0], img_size[1], ws, shift))
        else:
            self.attn_mask = None
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, ws, num_heads, qkv_bias, qk_scale, attn_drop, drop)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)

    def mask_for(self, h: int, w: int, device: torch.device,
                 masks: Optional[MaskCache] = None) -> Optional[torch.Tensor]:
        """The shift mask of an h x w map: the stored buffer at the design size, else made (once per masks)."""
        if not self.shift:
            return None
        if (h, w) == self.img_size:
            return self.attn_mask
        if masks is None:
            return shift_mask(h, w, self.ws, self.shift, device)
        key = (h, w, self.ws, self.shift)
        if key not in masks:
            masks[key] = shift_mask(h, w, self.ws, self.shift, device)
        return masks[key]

    def forward(self, x: torch.Tensor, h: int, w: int, masks: Optional[MaskCache] = None) -> torch.Tensor:
        """x: tokens (B, h * w, C) of an h x w map, row-major; masks: shift masks shared by the forward's blocks."""
        b, _, c = x.shape
        a = self.norm1(x).view(b, h, w, c)
        if self.shift:
            a = torch.roll(a, (-self.shift, -self.shift), (1, 2))
        a = self.attn(window_partition(a, self.ws), self.mask_for(h, w, x.device, masks))
        a = window_merge(a, self.ws, h, w)
        if self.shift:
            a = torch.roll(a, (self.shift, self.shift), (1, 2))
        x = x + self.drop_path(a.reshape(b, h * w, c))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class SwinStage(nn.Module):
    """A run of Swin blocks, unshifted and shifted alternately (the authors' `residual_group`)."""

    def __init__(self, blocks: Sequence[SwinBlock], use_checkpoint: bool):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.use_checkpoint = use_checkpoint

    def forward(self, x: torch.Tensor, h: int, w: int, masks: Optional[MaskCache] = None) -> torch.Tensor:
        """The blocks in turn on tokens x of an h x w map; masks as in SwinBlock.forward."""
        for blk in self.blocks:
            if self.use_checkpoint and torch.is_grad_enabled():
                x = checkpoint(blk, x, h, w, masks, use_reentrant=False)
            else:
                x = blk(x, h, w, masks)
        return x


def tokens(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, H * W, C), positions row-major."""
    return x.flatten(2).transpose(1, 2)


def untokens(t: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(B, H * W, C) -> (B, C, H, W)."""
    return t.transpose(1, 2).reshape(t.shape[0], t.shape[2], h, w)


def closing_conv(dim: int, resi_connection: str) -> nn.Module:
    """The conv that closes each residual group and the body: '1conv' 3x3, or '3conv' bottleneck."""
    if resi_connection == '1conv':
        return nn.Conv2d(dim, dim, 3, 1, 1)
    if resi_connection == '3conv':
        return nn.Sequential(nn.Conv2d(dim, dim // 4, 3, 1, 1), nn.LeakyReLU(0.2, True),
                             nn.Conv2d(dim // 4, dim // 4, 1), nn.LeakyReLU(0.2, True),
                             nn.Conv2d(dim // 4, dim, 3, 1, 1))
    raise ValueError(f"resi_connection must be '1conv' or '3conv', not {resi_connection!r}")


class RSTB(nn.Module):
    """Residual Swin transformer block: Swin blocks, a closing conv on the map, a skip over both."""

    def __init__(self, residual_group: SwinStage, conv: nn.Module):
        super().__init__()
        self.residual_group = residual_group
        self.conv = conv

    def forward(self, t: torch.Tensor, h: int, w: int, masks: Optional[MaskCache] = None) -> torch.Tensor:
        """The Swin blocks, the closing conv and the skip on tokens t of an h x w map (masks: as SwinBlock's)."""
        return tokens(self.conv(untokens(self.residual_group(t, h, w, masks), h, w))) + t


class PatchEmbed(nn.Module):
    """The token embedding (patch size 1: only a flatten) and its optional LayerNorm."""

    def __init__(self, dim: int, patch_norm: bool):
        super().__init__()
        self.norm = nn.LayerNorm(dim) if patch_norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = tokens(x)
        return t if self.norm is None else self.norm(t)


class SwinIR(nn.Module):
    """SwinIR feature extractor (upsampler 'none'): (B, 3, h, w) -> (B, 64, H, W) at the padded size.

    H, W are h, w rounded up to a multiple of window_size (reflect padding at the bottom/right,
    never cropped), as in the authors' LTE / LMF encoder. The arguments are the authors' (SWINIR.md);
    upscale and img_range only matter to upsampling variants, which are refused here.
    """

    def __init__(self, img_size: int = 48, patch_size: int = 1, in_chans: int = 3, embed_dim: int = 180,
                 depths: Sequence[int] = (6,) * 6, num_heads: Sequence[int] = (6,) * 6,
                 window_size: int = 8, mlp_ratio: float = 2.0, qkv_bias: bool = True,
                 qk_scale: Optional[float] = None, drop_rate: float = 0.0, attn_drop_rate: float = 0.0,
                 drop_path_rate: float = 0.1, ape: bool = False, patch_norm: bool = True,
                 use_checkpoint: bool = False, upscale: int = 2, img_range: float = 1.0,
                 upsampler: str = 'none', resi_connection: str = '1conv'):
        super().__init__()
        if upsampler != 'none':
            raise ValueError(f"swinir supports only upsampler 'none' (the LTE / LMF feature extractor), "
                             f"not {upsampler!r}")
        if ape:
            raise ValueError("swinir does not support ape (absolute position embedding); no released model uses it")
        if len(depths) != len(num_heads):
            raise ValueError(f"depths and num_heads need one entry per residual group, got {len(depths)} "
                             f"and {len(num_heads)}")
        bad = [nh for nh in num_heads if embed_dim % nh]
        if bad:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {bad}")
        size = (img_size // patch_size,) * 2
        self.window_size = window_size
        self.out_dim = OUT_DIM
        self.conv_first = nn.Conv2d(in_chans, embed_dim, 3, 1, 1)
        self.patch_embed = PatchEmbed(embed_dim, patch_norm)
        self.pos_drop = nn.Dropout(drop_rate)
        # plain numbers, also when the model is built on the meta device (config validation)
        rates = torch.linspace(0, drop_path_rate, sum(depths), device='cpu').tolist()
        self.layers = nn.ModuleList()
        for i, (depth, nh) in enumerate(zip(depths, num_heads)):
            first = sum(depths[:i])
            blocks = [SwinBlock(embed_dim, size, nh, window_size, 0 if j % 2 == 0 else window_size // 2,
                                mlp_ratio, qkv_bias, qk_scale, drop_rate, attn_drop_rate, rates[first + j])
                      for j in range(depth)]
            self.layers.append(RSTB(SwinStage(blocks, use_checkpoint), closing_conv(embed_dim, resi_connection)))
        self.norm = nn.LayerNorm(embed_dim)
        self.conv_after_body = closing_conv(embed_dim, resi_connection)
        self.conv_before_upsample = nn.Sequential(nn.Conv2d(embed_dim, OUT_DIM, 3, 1, 1), nn.LeakyReLU(inplace=True))
        self.apply(_init_weights)

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """x mirrored (edge not repeated) at the bottom and right up to a multiple of the window."""
        ws = self.window_size
        h, w = x.shape[-2:]
        ph, pw = -h % ws, -w % ws
        if ph >= h or pw >= w:
            raise UserError(f"input {h}x{w} is too small for swinir: mirroring it to a multiple of "
                            f"{ws} needs each side either a multiple of {ws} or above {ws // 2}")
        return F.pad(x, (0, pw, 0, ph), mode='reflect') if ph or pw else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, h, w) -> (B, 64, H, W), H and W the padded size."""
        f0 = self.conv_first(self.pad(x))
        h, w = f0.shape[-2:]
        t = self.pos_drop(self.patch_embed(f0))
        # off the design size every shifted block needs the same mask: made once here, not once per block
        masks: MaskCache = {}
        for layer in self.layers:
            t = layer(t, h, w, masks)
        y = self.conv_after_body(untokens(self.norm(t), h, w)) + f0
        return self.conv_before_upsample(y)


def _init_weights(m: nn.Module) -> None:
    """The authors' initialisation: truncated normal (std 0.02) linears with zero bias, unit LayerNorms."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


@register('swinir')
def swinir(img_size: int = 48, patch_size: int = 1, in_chans: int = 3, embed_dim: int = 180,
           depths: Sequence[int] = (6,) * 6, num_heads: Sequence[int] = (6,) * 6, window_size: int = 8,
           mlp_ratio: float = 2.0, qkv_bias: bool = True, qk_scale: Optional[float] = None,
           drop_rate: float = 0.0, attn_drop_rate: float = 0.0, drop_path_rate: float = 0.1,
           ape: bool = False, patch_norm: bool = True, use_checkpoint: bool = False, upscale: int = 2,
           img_range: float = 1.0, upsampler: str = 'none', resi_connection: str = '1conv',
           no_upsampling: bool = True) -> SwinIR:
    """SwinIR feature extractor (default: LTE's 180 x [6]*6); no_upsampling is accepted and ignored, as by the authors."""
    return SwinIR(img_size, patch_size, in_chans, embed_dim, list(depths), list(num_heads), window_size,
                  mlp_ratio, qkv_bias, qk_scale, drop_rate, attn_drop_rate, drop_path_rate, ape, patch_norm,
                  use_checkpoint, upscale, img_range, upsampler, resi_connection)
