"""RetinaFace with a ResNet-50 backbone in the facexlib weight layout (``detection_Resnet50_Final.pth``).

The network is rebuilt here from its published description (ResNet-50 C3-C5 -> 3-level FPN -> SSH
context modules -> per-level 1x1 heads with 2 anchors per position for scores, boxes and 5 landmarks;
anchors 16/32, 64/128, 256/512 px at strides 8/16/32; box variances 0.1/0.2). State-dict names follow
the facexlib file (``body.*``, ``fpn.*``, ``ssh1-3.*``, ``ClassHead/BboxHead/LandmarkHead.N.conv1x1``),
so that file loads as is; a ``module.`` prefix from DataParallel training is stripped.
Input convention of those weights: BGR pixels in [0, 255] minus the mean (104, 117, 123).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from daefr.errors import CheckpointError, WeightsNotFoundError
from daefr.inference.detection import DetectedFace, FaceDetector

MIN_SIZES = ((16, 32), (64, 128), (256, 512))
STEPS = (8, 16, 32)
VARIANCES = (0.1, 0.2)
BGR_MEAN = (104.0, 117.0, 123.0)


def _conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, relu: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(cout)]
    if relu:
        layers.append(nn.ReLU(inplace=True))  # the layout's LeakyReLU has slope 0 at 256 channels
    return nn.Sequential(*layers)


class Bottleneck(nn.Module):
    """ResNet-50 bottleneck (stride on the 3x3 conv): 1x1 -> 3x3 -> 1x1 (x4 channels) + shortcut."""

    def __init__(self, cin: int, width: int, stride: int) -> None:
        super().__init__()
        cout = width * 4
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.downsample = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            if stride != 1 or cin != cout else None
        )

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, 4 * planes, H/s, W/s): the three convs plus the (downsampled) shortcut, ReLU."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(out + shortcut)


class ResNet50Body(nn.Module):
    """ResNet-50 trunk returning the C3, C4, C5 maps (512, 1024, 2048 channels at strides 8, 16, 32)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1 = self._stage(64, 64, 3, 1)
        self.layer2 = self._stage(256, 128, 4, 2)
        self.layer3 = self._stage(512, 256, 6, 2)
        self.layer4 = self._stage(1024, 512, 3, 2)

    @staticmethod
    def _stage(cin: int, width: int, blocks: int, stride: int) -> nn.Sequential:
        return nn.Sequential(*(Bottleneck(cin if b == 0 else width * 4, width, stride if b == 0 else 1)
                               for b in range(blocks)))

    def forward(self, x: Tensor) -> list[Tensor]:
        """(B, 3, H, W) -> [C3, C4, C5] at strides 8, 16, 32."""
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        c2 = self.layer1(x)
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        return [c3, c4, self.layer4(c4)]


class FPN(nn.Module):
    """Top-down pyramid: 1x1 lateral convs, nearest upsampling + sum, a 3x3 conv after each merge."""

    def __init__(self, in_channels: tuple[int, int, int] = (512, 1024, 2048), out: int = 256) -> None:
        super().__init__()
        self.output1 = _conv_bn(in_channels[0], out, 1)
        self.output2 = _conv_bn(in_channels[1], out, 1)
        self.output3 = _conv_bn(in_channels[2], out, 1)
        self.merge1 = _conv_bn(out, out, 3)
        self.merge2 = _conv_bn(out, out, 3)

    def forward(self, feats: list[Tensor]) -> list[Tensor]:
        """[C3, C4, C5] -> [P3, P4, P5], each with ``out_channels`` channels at its input's size."""
        p3, p4, p5 = self.output1(feats[0]), self.output2(feats[1]), self.output3(feats[2])
        p4 = self.merge2(p4 + F.interpolate(p5, size=p4.shape[-2:], mode="nearest"))
        p3 = self.merge1(p3 + F.interpolate(p4, size=p3.shape[-2:], mode="nearest"))
        return [p3, p4, p5]


class SSH(nn.Module):
    """Context module: concatenated 3x3, 5x5 (two 3x3) and 7x7 (three 3x3) branches, then ReLU."""

    def __init__(self, cin: int = 256, cout: int = 256) -> None:
        super().__init__()
        self.conv3X3 = _conv_bn(cin, cout // 2, 3, relu=False)
        self.conv5X5_1 = _conv_bn(cin, cout // 4, 3)
        self.conv5X5_2 = _conv_bn(cout // 4, cout // 4, 3, relu=False)
        self.conv7X7_2 = _conv_bn(cout // 4, cout // 4, 3)
        self.conv7x7_3 = _conv_bn(cout // 4, cout // 4, 3, relu=False)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, out_channels, H, W) context features."""
        mid = self.conv5X5_1(x)
        branches = [self.conv3X3(x), self.conv5X5_2(mid), self.conv7x7_3(self.conv7X7_2(mid))]
        return F.relu(torch.cat(branches, dim=1))


class _Head(nn.Module):
    def __init__(self, cin: int, per_anchor: int, anchors: int = 2) -> None:
        super().__init__()
        self.per_anchor = per_anchor
        self.conv1x1 = nn.Conv2d(cin, anchors * per_anchor, 1)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv1x1(x).permute(0, 2, 3, 1)
        return out.reshape(out.shape[0], -1, self.per_anchor)


class RetinaFaceResNet50(nn.Module):
    """RetinaFace with a ResNet-50 trunk: raw box, score and landmark predictions per anchor.

    ``forward(x (B, 3, H, W) BGR minus mean)`` -> (boxes (B, N, 4), scores (B, N, 2) softmaxed,
    landmarks (B, N, 10)) as anchor offsets, N = 2 * sum of the three pyramid levels' positions.
    """

    def __init__(self) -> None:
        super().__init__()
        self.body = ResNet50Body()
        self.fpn = FPN()
        self.ssh1, self.ssh2, self.ssh3 = SSH(), SSH(), SSH()
        self.ClassHead = nn.ModuleList([_Head(256, 2) for _ in range(3)])
        self.BboxHead = nn.ModuleList([_Head(256, 4) for _ in range(3)])
        self.LandmarkHead = nn.ModuleList([_Head(256, 10) for _ in range(3)])

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(B, 3, H, W) BGR minus mean -> boxes (B, N, 4), scores (B, N, 2) softmaxed, landmarks (B, N, 10)."""
        p3, p4, p5 = self.fpn(self.body(x))
        feats = [self.ssh1(p3), self.ssh2(p4), self.ssh3(p5)]
        boxes = torch.cat([h(f) for h, f in zip(self.BboxHead, feats)], dim=1)
        scores = torch.cat([h(f) for h, f in zip(self.ClassHead, feats)], dim=1).softmax(dim=-1)
        landmarks = torch.cat([h(f) for h, f in zip(self.LandmarkHead, feats)], dim=1)
        return boxes, scores, landmarks


def prior_boxes(height: int, width: int) -> np.ndarray:
    """Anchors (N, 4) as (cx, cy, w, h) relative to the image size, in the heads' output order."""
    rows = []
    for step, sizes in zip(STEPS, MIN_SIZES):
        fh, fw = math.ceil(height / step), math.ceil(width / step)
        ys, xs = np.meshgrid(np.arange(fh), np.arange(fw), indexing="ij")
        cx = ((xs + 0.5) * step / width).reshape(-1, 1)
        cy = ((ys + 0.5) * step / height).reshape(-1, 1)
        per_size = [np.concatenate([cx, cy, np.full_like(cx, s / width), np.full_like(cy, s / height)], 1)
                    for s in sizes]
        rows.append(np.stack(per_size, axis=1).reshape(-1, 4))  # position-major, then anchor size
    return np.concatenate(rows, axis=0)


def decode(loc: np.ndarray, landm: np.ndarray, priors: np.ndarray, height: int, width: int
           ) -> tuple[np.ndarray, np.ndarray]:
    """Anchor offsets -> boxes (N, 4) x0, y0, x1, y1 and landmarks (N, 5, 2), in pixels."""
    centre = priors[:, :2] + loc[:, :2] * VARIANCES[0] * priors[:, 2:]
    size = priors[:, 2:] * np.exp(loc[:, 2:] * VARIANCES[1])
    boxes = np.concatenate([centre - size / 2, centre + size / 2], axis=1) * np.array([width, height] * 2)
    points = priors[:, None, :2] + landm.reshape(-1, 5, 2) * VARIANCES[0] * priors[:, None, 2:]
    return boxes, points * np.array([width, height])


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> list[int]:
    """Indices kept by greedy non-maximum suppression, highest score first."""
    order = np.argsort(-scores)
    areas = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    keep: list[int] = []
    while order.size:
        best, rest = int(order[0]), order[1:]
        keep.append(best)
        lo = np.maximum(boxes[best, :2], boxes[rest, :2])
        hi = np.minimum(boxes[best, 2:], boxes[rest, 2:])
        inter = np.prod(np.clip(hi - lo, 0, None), axis=1)
        iou = inter / np.maximum(areas[best] + areas[rest] - inter, 1e-12)
        order = rest[iou <= iou_threshold]
    return keep


#: The facexlib file name RetinaFace weights are looked up by, and where to get it.
RETINAFACE_FILE = "detection_Resnet50_Final.pth"
RETINAFACE_SOURCE = ("https://github.com/xinntao/facexlib/releases (v0.1.0, detection_Resnet50_Final.pth); pass "
                     "it with --detector-arg weights=PATH")


def load_retinaface(weights: str | Path, device: str | torch.device = "cpu") -> RetinaFaceResNet50:
    """The network with weights from a facexlib ``detection_Resnet50_Final.pth`` (or a safetensors copy)."""
    path = Path(weights)
    if not path.is_file():
        raise WeightsNotFoundError(
            f"RetinaFace weights not found: {path}; download detection_Resnet50_Final.pth (facexlib release "
            "v0.1.0) and pass its path, e.g. --detector retinaface_resnet50 --detector-arg weights=PATH"
        )
    state: Any
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot read RetinaFace weights ({type(exc).__name__}: {exc})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    state = {(k[7:] if k.startswith("module.") else k): v for k, v in state.items()}
    with torch.device("meta"):  # every weight comes from the file: skip the random initialisation
        model = RetinaFaceResNet50()
    expected = model.state_dict()
    # BatchNorm step counters are bookkeeping that older files lack
    missing = sorted(k for k in set(expected) - set(state) if not k.endswith("num_batches_tracked"))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        detail = "; ".join(f"{name}: {', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''}"
                           for name, keys in (("missing", missing), ("unexpected", unexpected),
                                              ("wrong shape", wrong)) if keys)
        raise CheckpointError(f"{path}: not RetinaFace-ResNet50 weights in the facexlib layout ({detail})")
    model = model.to_empty(device="cpu")
    for name, buffer in model.named_buffers():
        if name.endswith("num_batches_tracked"):
            buffer.zero_()
    model.load_state_dict(state, strict=False)
    return model.to(device).eval()


class RetinaFaceDetector(FaceDetector):
    """RetinaFace-ResNet50 (the official DAEFR/CodeFormer pipeline's detector), weights from a path.

    ``threshold``: face score cut-off; ``nms_threshold``: box IoU for suppression; ``min_short_side``:
    photos whose shorter side is below it are enlarged to it first (small faces), as that pipeline does;
    ``device``: where the network runs.
    """

    def __init__(
        self,
        weights: str | None = None,
        threshold: float = 0.8,
        nms_threshold: float = 0.4,
        min_short_side: int | None = 640,
        device: str = "cpu",
    ) -> None:
        from daefr.utils.weights import resolve_weights

        self.device = torch.device(device)
        # looked up like every weight file: a path, a folder, $DAEFR_WEIGHTS_DIR, the torch.hub cache
        path = resolve_weights(weights, RETINAFACE_FILE, "RetinaFace detector weights", RETINAFACE_SOURCE,
                               search_torch_hub=True)
        self.model = load_retinaface(path, self.device)
        self.threshold = float(threshold)
        self.nms_threshold = float(nms_threshold)
        self.min_short_side = min_short_side

    def detect(self, image: np.ndarray) -> list[DetectedFace]:
        """Faces of ``image`` (H, W, 3) uint8 RGB: decoded boxes and 5 landmarks above ``threshold``, after NMS."""
        from daefr.inference import optional

        scale = 1.0
        work = image
        if self.min_short_side and min(image.shape[:2]) < self.min_short_side:
            cv2 = optional.cv2()
            scale = self.min_short_side / min(image.shape[:2])
            size = (int(round(image.shape[1] * scale)), int(round(image.shape[0] * scale)))
            work = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
        height, width = work.shape[:2]
        bgr = work[..., ::-1].astype(np.float32) - np.array(BGR_MEAN, dtype=np.float32)
        x = torch.from_numpy(np.ascontiguousarray(bgr.transpose(2, 0, 1)))[None].to(self.device)
        with torch.inference_mode():
            loc, conf, landm = (t[0].float().cpu().numpy() for t in self.model(x))
        return faces_from_outputs(loc, conf, landm, height, width, self.threshold, self.nms_threshold, scale)


def faces_from_outputs(
    loc: np.ndarray,
    conf: np.ndarray,
    landm: np.ndarray,
    height: int,
    width: int,
    threshold: float = 0.8,
    nms_threshold: float = 0.4,
    scale: float = 1.0,
) -> list[DetectedFace]:
    """One input's outputs (N, 4), (N, 2), (N, 10) at (height, width) -> faces, coordinates divided by ``scale``."""
    scores = conf[:, 1]
    keep = scores > threshold
    if not keep.any():
        return []
    boxes, points = decode(loc[keep], landm[keep], prior_boxes(height, width)[keep], height, width)
    scores = scores[keep]
    faces = []
    for i in nms(boxes, scores, nms_threshold):
        five = points[i] / scale
        faces.append(DetectedFace(boxes[i] / scale, float(scores[i]), five, five.copy()))
    return faces
