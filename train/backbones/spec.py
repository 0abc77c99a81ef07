"""What a backbone expects of its input: the one source of truth for preprocessing."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HALF = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class BackboneSpec:
    """Architecture and preprocessing of a named backbone; travels into checkpoints and bundles."""

    name: str
    timm_arch: str
    img_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"
    crop_pct: float = 0.875
    arch_kwargs: tuple[tuple[str, object], ...] = ()

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def final_norm(self) -> bool:
        """Whether the ViT ends with its LayerNorm (timm's `final_norm`; the reference's MoCo v3 build does not)."""
        return bool(dict(self.arch_kwargs).get("final_norm", True))

    def without_final_norm(self) -> BackboneSpec:
        """The same backbone built without the final LayerNorm: features are the raw last-block cls token."""
        kwargs = tuple((k, v) for k, v in self.arch_kwargs if k != "final_norm") + (("final_norm", False),)
        return replace(self, arch_kwargs=kwargs)
