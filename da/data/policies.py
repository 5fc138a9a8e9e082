"""Strong augmentation policies by name (``--fixmatch-strong``), declared apart from ``da.data.transforms`` so that
the command line can list them without importing torchvision: each is a torchvision ``transforms.v2`` class and
its arguments, which ``da.data.transforms.train_transform`` builds.  RandAugment's are the RandAugment paper's
ImageNet setting (Cubuk et al., CVPR Workshops 2020: N 2 operations, magnitude 9 of 31 bins, torchvision's
defaults); TrivialAugment has none."""

STRONG_POLICIES: dict[str, tuple[str, dict]] = {
    "randaugment": ("RandAugment", {"num_ops": 2, "magnitude": 9}),
    "trivialaugment": ("TrivialAugmentWide", {}),
}
