"""Sample-quality metrics used by the lessons."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from minidiff._checks import check_choice, check_finite
from minidiff.checkpoint import Checkpoint
from minidiff.classifier import classifier_data, load_classifier
from minidiff.data import SHAPE_CLASSES, TOY_DATASETS, ShapesDataset, make_toy, shape_mask
from minidiff.data.clips import path_residual, track
from minidiff.data.mixture import GaussianMixture
from minidiff.data.sounds import PITCHES, dominant_frequency, nearest_pitch, to_waveform
from minidiff.files import WEIGHTS_DIR
from minidiff.generate import generate


def sliced_wasserstein(x: Tensor, y: Tensor, n_projections: int = 256, seed: int = 0) -> float:
    """Sliced Wasserstein-2 distance between two point clouds (Rabin et al. 2011).

    Project both clouds on many random directions; along one direction the Wasserstein
    distance between two 1-D samples is the distance between their sorted values
    (quantiles). Average the squared distances over directions, take the square root:

        SW₂(x, y)² = E_θ [ ∫₀¹ (F⁻¹_{θ·x}(q) - F⁻¹_{θ·y}(q))² dq ]

    It is 0 for identical distributions and is in the units of the data, so
    "0.05" means "about 0.05 apart". Two independent samples of the *same*
    distribution are not at 0 (finite-sample noise): compare against that floor.

    Args:
        x, y: samples of shape (N, d) and (M, d); N and M may differ
        n_projections: random directions θ on the unit sphere
        seed: seed for the directions, so repeated calls agree
    """
    for name, z in (("x", x), ("y", y)):
        check_finite(name, z)
        if z.ndim != 2 or len(z) == 0:
            raise ValueError(f"{name} must have shape (N, d) with N >= 1 points, got {tuple(z.shape)}")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same dimension d, got {x.shape[1]} and {y.shape[1]}")
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(x.shape[1], n_projections, generator=g, dtype=torch.float64)
    theta = theta / theta.norm(dim=0, keepdim=True)  # (d, P) unit directions
    q = torch.linspace(0, 1, min(len(x), len(y)), dtype=torch.float64)  # common quantile levels
    qx = torch.quantile(x.double().cpu() @ theta, q, dim=0)  # (Q, P)
    qy = torch.quantile(y.double().cpu() @ theta, q, dim=0)
    return ((qx - qy) ** 2).mean().sqrt().item()


def ks_to_normal(x: Tensor) -> float:
    """Kolmogorov–Smirnov distance between the values of x (all entries pooled) and N(0, 1):
    the largest gap between their empirical CDF and the normal CDF Φ. Near 0 means "looks
    like standard normal noise"; with n values, gaps of about 1.36/√n arise by chance (5%)."""
    check_finite("x", x)
    values = x.detach().flatten().double().cpu().sort().values  # (n,)
    n = values.numel()
    cdf = torch.special.ndtr(values)  # Φ at each value
    above = torch.arange(1, n + 1, dtype=torch.float64) / n - cdf  # empirical CDF just after each value
    below = cdf - torch.arange(0, n, dtype=torch.float64) / n  # … and just before
    return max(above.max().item(), below.max().item())


def frechet_distance(feats_a: Tensor, feats_b: Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two sets of features (Dowson & Landau 1982),
    the formula behind FID (Heusel et al. 2017, eq. 6):

        FD = ‖μ_a − μ_b‖² + Tr(Σ_a + Σ_b − 2 (Σ_a Σ_b)^{1/2})

    μ, Σ: mean and covariance of each set. Σ_a Σ_b is not symmetric, but it has the same
    eigenvalues as the symmetric PSD matrix √Σ_a Σ_b √Σ_a, so the trace of its square root is
    the sum of the square roots of those eigenvalues (computed in float64; rounding can make
    tiny ones negative, they are clamped to 0). It is 0 for identical sets. From finite samples
    it is biased upward, more so for few samples: compare numbers computed with the same sizes.

    Args:
        feats_a, feats_b: features of shape (N, d) and (M, d), N, M >= 2
    """
    for name, z in (("feats_a", feats_a), ("feats_b", feats_b)):
        check_finite(name, z)
        if z.ndim != 2 or len(z) < 2:
            raise ValueError(f"{name} must have shape (N, d) with N >= 2, got {tuple(z.shape)}")
    if feats_a.shape[1] != feats_b.shape[1]:
        raise ValueError(
            f"feats_a and feats_b must have the same dimension d, got {feats_a.shape[1]} and {feats_b.shape[1]}"
        )
    a, b = feats_a.detach().double().cpu(), feats_b.detach().double().cpu()
    mu_a, mu_b = a.mean(dim=0), b.mean(dim=0)  # (d,)
    sigma_a, sigma_b = torch.cov(a.T), torch.cov(b.T)  # (d, d)
    sqrt_a = _sqrt_psd(sigma_a)
    product = sqrt_a @ sigma_b @ sqrt_a  # √Σ_a Σ_b √Σ_a, symmetric PSD
    trace_sqrt = torch.linalg.eigvalsh((product + product.T) / 2).clamp(min=0).sqrt().sum()  # Tr (Σ_a Σ_b)^{1/2}
    fd = (mu_a - mu_b).square().sum() + sigma_a.trace() + sigma_b.trace() - 2 * trace_sqrt
    return max(fd.item(), 0.0)


def _sqrt_psd(sigma: Tensor) -> Tensor:
    """The symmetric square root of a symmetric PSD matrix (d, d), by eigen-decomposition."""
    eigvals, V = torch.linalg.eigh(sigma)
    return (V * eigvals.clamp(min=0).sqrt()) @ V.T  # V diag(√λ) Vᵀ


def label_entropy(counts: Tensor) -> float:
    """Entropy in bits of a label histogram (K,): log2 K when every class is equally frequent,
    0 when all samples fall in one class."""
    p = counts.double() / counts.sum()  # (K,)
    p = p[p > 0]  # empty classes add 0 (p log p → 0)
    return (p * (1 / p).log2()).sum().item()  # H = Σ p log2(1/p)


def saturation(images: Tensor) -> float:
    """Share of pixel values (every channel of every pixel) at the clip limits: those that
    become 0 or 255 when images in [-1, 1] are turned into 8-bit colours. Over-guided
    samples burn out towards pure colours, so this rises with the guidance scale."""
    check_finite("images", images)
    u8 = ((images.clamp(-1, 1) + 1) * 127.5).round()  # the 8-bit value of each pixel value
    return ((u8 == 0) | (u8 == 255)).double().mean().item()


def mask_iou(a: Tensor, b: Tensor) -> Tensor:
    """Intersection over union of two batches of masks (B, 1, H, W) bool, per sample (B,):
    |a ∧ b| / |a ∨ b|, 1 where both are empty. With `minidiff.data.shape_mask` of a sample and the
    mask it was asked to fill, how well a ControlNet's sample obeys its control."""
    if a.shape != b.shape or a.dtype != torch.bool or b.dtype != torch.bool:
        raise ValueError(f"a and b must be bool masks of one shape, got {a.dtype} {tuple(a.shape)} and "
                         f"{b.dtype} {tuple(b.shape)}")
    inter, union = (a & b).flatten(1).sum(1), (a | b).flatten(1).sum(1)  # (B,)
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(inter, dtype=torch.float))


class PointMetric:
    """Sample quality for a 2-D toy dataset (`minidiff.data.TOY_DATASETS`): the sliced Wasserstein
    distance (`sliced_wasserstein`) of the samples to n held-out points of the dataset (seed 1;
    the training data is seed 0). Read it against the data baseline, n training points scored the
    same way: `PointMetric("two_moons").evaluate(make_toy("two_moons", 2000))`."""

    def __init__(self, dataset: str, n: int = 2000):
        check_choice("toy dataset", dataset, TOY_DATASETS)
        self.dataset = dataset
        self.reference = make_toy(dataset, n, seed=1)

    def evaluate(self, points: Tensor, labels: Tensor | None = None) -> dict[str, float]:
        """{"sliced_wasserstein": …} for points (N, 2); labels are not used (toy models take none)."""
        if points.ndim != 2 or points.shape[1] != 2:
            raise ValueError(f"points must have shape (N, 2), got {tuple(points.shape)}")
        check_finite("points", points)
        return {"sliced_wasserstein": sliced_wasserstein(points.detach().cpu().float(), self.reference)}


@functools.lru_cache(maxsize=8)
def dataset_metric(dataset: str) -> ImageMetric | PointMetric:
    """The metric publish and the benchmarks score a dataset's samples with: `ImageMetric` for
    "digits", "shapes" and "clip_frames", `SoundMetric` for "sounds", `ClipMetric` for "clips",
    `PointMetric` for a 2-D toy. Built once per process (it loads a classifier and scores the
    held-out reference data), then shared: a metric holds no state that scoring changes."""
    if dataset in TOY_DATASETS:
        return PointMetric(dataset)
    return {"sounds": SoundMetric, "clips": ClipMetric}.get(dataset, lambda: ImageMetric(dataset))()


class ImageMetric:
    """Sample quality for one image dataset ("digits" or "shapes"), seen by a small classifier
    trained on that dataset (`minidiff.classifier`, shipped weights).

    - `fd(images)`: the Fréchet distance between the classifier's features (its penultimate
      layer) of `images` and of the dataset's held-out test images. Lower is closer to the data.
      Like FID, but it is *not* FID: the features come from a 64-d classifier of this one
      dataset, not from Inception trained on ImageNet, so the numbers are only comparable with
      each other (same dataset, same number of images), never with published FIDs. Read them
      against the data baseline, real training images scored the same way:
      `metric.fd(DigitsDataset(16, "train").images)` or `metric.fd(ShapesDataset(2000, 32, seed=0).images)`.
    - `label_histogram(images)`: how many images the classifier assigns to each class, for
      diversity: a model that forgets classes (mode collapse) leaves some empty.
    - `evaluate(images, labels)`: the numbers above in one pass, and for class-conditional
      samples, the accuracy: the fraction the classifier sees as the wanted label.

    Images are (N, C, H, W) in [-1, 1], clamped to it as for display, at the size of the
    diffusion recipes (digits 1×16×16, shapes 3×32×32). The classifier runs on the images' device.
    """

    def __init__(self, dataset: str, weights_dir: str | None = None):
        """dataset: "digits" or "shapes"; weights_dir: where the classifier weights and their
        manifest are (default: the package's shipped ones)."""
        self.dataset = dataset
        self.classifier = load_classifier(dataset, weights_dir or WEIGHTS_DIR)
        test = classifier_data(dataset, "test")
        self.class_names = test.class_names
        self.image_shape = tuple(test.images.shape[1:])  # (C, H, W)
        self.reference = self._run(test.images)[0].cpu()  # (N_test, D) features of held-out real images

    @torch.no_grad()
    def _run(self, images: Tensor, batch_size: int = 500) -> tuple[Tensor, Tensor]:
        """Features (N, D) and logits (N, K) of images (N, C, H, W), on the images' device."""
        check_finite("images", images)
        if tuple(images.shape[1:]) != self.image_shape or images.ndim != 4:
            shape = ", ".join(map(str, self.image_shape))
            raise ValueError(
                f"images must have shape (N, {shape}) for the {self.dataset} classifier, got {tuple(images.shape)}"
            )
        model = self.classifier.to(images.device)
        feats = torch.cat([model.features(x) for x in images.clamp(-1, 1).float().split(batch_size)])  # (N, D)
        return feats, model.head(feats)

    def fd(self, images: Tensor) -> float:
        """Fréchet distance between the features of images (N, C, H, W) and of the test images."""
        return frechet_distance(self._run(images)[0], self.reference)

    def predict(self, images: Tensor) -> Tensor:
        """The class the classifier sees in each image (N, C, H, W): (N,) int64, on the CPU."""
        return self._run(images)[1].argmax(dim=1).cpu()

    def label_histogram(self, images: Tensor) -> Tensor:
        """Number of images (N, C, H, W) the classifier assigns to each class, (K,) int64."""
        return self._histogram(self._run(images)[1])

    def _histogram(self, logits: Tensor) -> Tensor:
        return torch.bincount(logits.argmax(dim=1).cpu(), minlength=len(self.class_names))  # (K,)

    def evaluate(self, images: Tensor, labels: Tensor | None = None) -> dict[str, float]:
        """All the numbers for images (N, C, H, W), and labels (N,) they were conditioned on if any:
        fd, label_entropy (bits; log2 K is all classes equally often), classes_covered (out of K),
        saturation (`saturation`), and with labels, accuracy (fraction classified as their label)."""
        return self.scores(images, labels)[0]

    def scores(self, images: Tensor, labels: Tensor | None = None) -> tuple[dict[str, float], Tensor]:
        """`evaluate`'s numbers and the class seen in each image (N,) (`predict`), from one pass of the classifier."""
        feats, logits = self._run(images)
        counts = self._histogram(logits)
        result = {
            "fd": frechet_distance(feats, self.reference),
            "label_entropy": label_entropy(counts),
            "classes_covered": int((counts > 0).sum()),
            "saturation": saturation(images),
        }
        if labels is not None:
            if labels.shape != (len(images),) or labels.dtype.is_floating_point:
                raise ValueError(
                    f"labels must be integers of shape ({len(images)},), got {labels.dtype} {tuple(labels.shape)}"
                )
            result["accuracy"] = (logits.argmax(dim=1).cpu() == labels.cpu()).double().mean().item()
        return result, logits.argmax(dim=1).cpu()


class SoundMetric(ImageMetric):
    """`ImageMetric` for the spectrograms of `minidiff.data.sounds` (FD and accuracy by the shipped
    sounds classifier), and with labels (timbre·6 + pitch) two accuracies apart:

    - pitch_accuracy: the sound is turned back into a waveform (`to_waveform`, Griffin-Lim) and its
      dominant frequency (`dominant_frequency`, an FFT) is nearest to the pitch asked for: a measure
      that needs no trained network at all;
    - timbre_accuracy: the classifier sees the timbre asked for (whatever the pitch)."""

    def __init__(self, weights_dir: str | None = None):
        super().__init__("sounds", weights_dir)

    def scores(self, images: Tensor, labels: Tensor | None = None) -> tuple[dict[str, float], Tensor]:
        result, seen = super().scores(images, labels)
        if labels is not None:
            n_pitches = len(PITCHES)
            heard = nearest_pitch(dominant_frequency(to_waveform(images.float().cpu())))
            result["pitch_accuracy"] = (heard == labels.cpu() % n_pitches).double().mean().item()
            result["timbre_accuracy"] = (seen // n_pitches == labels.cpu() // n_pitches).double().mean().item()
        return result, seen


class ClipMetric:
    """What a clip model of `minidiff.data.clips` must get right, for clips (B, F, 3, 16, 16), and with
    `labels` (B,) the class each was asked for:

        fd, accuracy   every frame as an image: `ImageMetric("clip_frames")` (a classifier trained on
                       real frames), its Fréchet distance and the share of frames of the class asked for
        same_class     the share of clips whose frames the classifier all sees as one class
        path_residual  the median over clips of how far the tracked centre is from a straight line at
                       constant speed (`minidiff.data.clips.path_residual`, pixels)
        lost           the share of frames where no shape is found (`track`)
        flicker        the mean change of the background from one frame to the next (pixels outside the
                       shape in both frames; values in [-1, 1]): 0 for a still background

    Read them against real clips scored the same way."""

    class_names = SHAPE_CLASSES

    def __init__(self, weights_dir: str | None = None):
        self.frames = ImageMetric("clip_frames", weights_dir)

    def evaluate(self, clips: Tensor, labels: Tensor | None = None) -> dict[str, float]:
        if clips.ndim != 5:
            raise ValueError(f"clips must have shape (B, F, 3, H, W), got {tuple(clips.shape)}")
        B, Fr = clips.shape[:2]
        frames = clips.flatten(0, 1)  # (B·F, 3, H, W)
        scores, seen = self.frames.scores(frames, None if labels is None else labels.repeat_interleave(Fr))
        seen = seen.reshape(B, Fr)  # the class seen in each frame
        centres = track(clips.float().cpu())
        background = ~shape_mask(frames).reshape(B, Fr, 1, *clips.shape[3:])  # (B, F, 1, H, W)
        still = background[:, 1:] & background[:, :-1]  # outside the shape in both of two frames
        change = (clips[:, 1:] - clips[:, :-1]).abs().float().mean(2, keepdim=True)  # (B, F-1, 1, H, W)
        result = {"fd": scores["fd"], "same_class": (seen == seen[:, :1]).all(1).double().mean().item(),
                  "path_residual": path_residual(centres).nanmedian().item(),
                  "lost": centres.isnan().any(-1).double().mean().item(),
                  "flicker": (change * still).sum().item() / still.sum().clamp(min=1).item()}
        return result | ({"accuracy": scores["accuracy"]} if labels is not None else {})

    def predict(self, clips: Tensor) -> Tensor:
        """The class the frame classifier sees in most frames of each clip, (B,)."""
        return self.frames.predict(clips.flatten(0, 1)).reshape(clips.shape[:2]).mode(1).values


def control_adherence(
    ckpt: Checkpoint, n: int = 256, guidance: float = 3.0, steps: int = 25, seed: int = 0, control: bool = True
) -> dict[str, float]:
    """How well a ControlNet on shapes (`minidiff.nn.controlnet`) obeys its control: n held-out
    scenes (`ShapesDataset`, seed 1) give each sample a mask (`shape_mask`) and a label; the samples
    (`generate`, every one asked for its scene's label at `guidance`) are scored by

        iou       the mean IoU (`mask_iou`) between the mask asked for and the sample's own shape mask
        accuracy  the share the shapes classifier sees as the label asked for
        fd        the Fréchet distance of `dataset_metric("shapes")`

    control=False draws the same samples without the control (the frozen base alone): the IoU
    a model reaches by chance, the baseline the control must beat."""
    scenes = ShapesDataset(n, ckpt.sample_shape[-1], seed=1)
    masks = shape_mask(scenes.images)  # (n, 1, H, W)
    images = generate(ckpt, n, label=scenes.labels, guidance=guidance, steps=steps, seed=seed,
                      control=masks if control else None)
    scores = dataset_metric("shapes").evaluate(images, scenes.labels)
    return {"iou": mask_iou(shape_mask(images), masks).mean().item(), "accuracy": scores["accuracy"],
            "fd": scores["fd"]}


def class_accuracy(ckpt: Checkpoint, classes: Sequence[str], n_per_class: int, guidance: float, steps: int = 25,
                   seed: int = 0) -> float:
    """The share of samples of a shapes model (n_per_class of each class named in `classes`, at
    `guidance`) that the shapes classifier sees as the class asked for: how well a model draws a
    concept, and, for the classes it knew before a fine-tune, how much it forgot."""
    metric = dataset_metric("shapes")
    labels = torch.tensor([metric.class_names.index(c) for c in classes]).repeat_interleave(n_per_class)  # (N,)
    images = generate(ckpt, len(labels), label=labels, guidance=guidance, steps=steps, seed=seed)
    return metric.evaluate(images, labels)["accuracy"]


class CountCalls:
    """A denoiser that passes every call on to `model` and counts them: `calls` is the number
    of function evaluations (NFE) a sampler spent, the fair unit of its cost.

        counted = CountCalls(model)
        sample(counted, x_T, schedule, "heun", steps=10)
        counted.calls  # 19: Heun calls the model 2·steps − 1 times

    Positional and keyword arguments after (x_t, t), e.g. a condition y=…, are passed on.
    """

    def __init__(self, model: Callable[..., Tensor]):
        if not callable(model):
            raise TypeError(f"model must be callable, a denoiser model(x_t, t), got {type(model).__name__}")
        self.model, self.calls = model, 0

    def __call__(self, x_t: Tensor, t: Tensor, *args, **kwargs) -> Tensor:
        self.calls += 1
        return self.model(x_t, t, *args, **kwargs)


def mmd_to_gmm(x: Tensor, gmm: GaussianMixture, ell: float = 0.1) -> float:
    """Maximum mean discrepancy (Gretton et al. 2012, "A Kernel Two-Sample Test") between the
    distribution q of the samples x and the Gaussian mixture p = Σ_k w_k N(μ_k, Σ_k), with the
    Gaussian kernel k(x, y) = exp(-‖x - y‖²/2ℓ²):

        MMD²(q, p) = E_{x,x'~q} k(x, x') - 2 E_{x~q, y~p} k(x, y) + E_{y,y'~p} k(y, y')

    k(x, ·) is a Gaussian density times c = (2πℓ²)^(d/2), so both expectations over p are exact:

        E_{y~p} k(x, y)     = c Σ_k w_k N(x; μ_k, Σ_k + ℓ²I)             (p blurred by N(0, ℓ²I))
        E_{y,y'~p} k(y, y') = c Σ_{j,k} w_j w_k N(μ_j; μ_k, Σ_j + Σ_k + ℓ²I)

    Only the first term is estimated, by the V-statistic (1/n²) Σ_{i,i'} k(x_i, x_i'), which
    keeps the terms i = i'. The estimate of MMD² is therefore biased upwards: n samples of p
    itself score (1 - E_{y,y'~p} k)/n on average, a floor that falls as 1/n.

    Args:
        x:   samples, shape (n, d), float, on any device (the sum over pairs runs there, in float64)
        gmm: the mixture to compare with, of dimension d
        ell: the kernel width ℓ > 0: the scale of the detail that counts
    Returns:
        MMD = √max(MMD², 0), as a float.
    """
    if not isinstance(gmm, GaussianMixture):
        raise TypeError(f"gmm must be a GaussianMixture, got {type(gmm).__name__}")
    check_finite("x", x)
    if x.ndim != 2 or x.shape[1] != gmm.dim:
        raise ValueError(f"x must have shape (n, {gmm.dim}), one sample of the mixture per row, got {tuple(x.shape)}")
    if isinstance(ell, bool) or not isinstance(ell, (int, float)) or not 0 < ell < math.inf:
        raise ValueError(f"ell (the kernel width) must be a positive number, got {ell!r}")
    x = x.to(torch.float64)  # (n, d)
    c = (2 * math.pi * ell**2) ** (gmm.dim / 2)
    blur = ell**2 * torch.eye(gmm.dim, dtype=torch.float64)  # ℓ²I, (d, d)
    k_qq = torch.exp(-torch.cdist(x, x).square() / (2 * ell**2)).mean()  # V-statistic of E_{x,x'~q} k
    blurred = GaussianMixture(gmm.means, gmm.covs + blur, gmm.weights)
    k_qp = c * blurred.log_prob(x.to(gmm.means.device)).exp().mean()  # E_{x~q, y~p} k, exact in y
    k_pp = 0.0  # E_{y,y'~p} k, exact: each component j against p blurred by N(0, Σ_j + ℓ²I)
    for j, w in enumerate(gmm.weights.tolist()):
        spread = GaussianMixture(gmm.means, gmm.covs + gmm.covs[j] + blur, gmm.weights)
        k_pp += c * w * spread.log_prob(gmm.means[j : j + 1]).exp().item()
    return math.sqrt(max(k_qq.item() - 2 * k_qp.item() + k_pp, 0.0))
