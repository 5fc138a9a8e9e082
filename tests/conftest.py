import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def _private_verification_memo(tmp_path_factory):
    """Remembered image verifications go to a folder of this test session, not to ~/.cache (subprocesses
    inherit it through the environment)."""
    old = os.environ.get("DA_CACHE_DIR")
    os.environ["DA_CACHE_DIR"] = str(tmp_path_factory.mktemp("da-cache"))
    yield
    if old is None:
        os.environ.pop("DA_CACHE_DIR", None)
    else:
        os.environ["DA_CACHE_DIR"] = old


def real_data_root() -> Path:
    """Where the real AID and RSSCN7 copies live: DA_DATA_ROOT, else ../shared/data beside the repo."""
    return Path(os.environ.get("DA_DATA_ROOT", REPO.parent / "shared" / "data"))


@pytest.fixture
def real_root() -> Path:
    root = real_data_root()
    if not (root / "AID").is_dir() or not (root / "RSSCN7").is_dir():
        pytest.skip(f"real data (AID, RSSCN7) not found under {root}; set DA_DATA_ROOT")
    return root


def write_image(path: Path, seed: int, size: int = 24, color: tuple[int, int, int] | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    if color is not None:  # a class-dependent tint makes tiny datasets learnable
        arr = (arr // 4 + np.array(color, dtype=np.uint8) // 4 * 3).astype(np.uint8)
    Image.fromarray(arr).save(path, quality=95)


def make_folder_dataset(root: Path, name: str, classes: list[str], per_class: int, size: int = 24) -> Path:
    """A tiny dataset in the official layout <root>/<name>/<class>/<img>.jpg with class-tinted noise."""
    palette = [(220, 40, 40), (40, 200, 40), (40, 40, 220), (200, 200, 40), (40, 200, 200), (200, 40, 200),
               (120, 120, 120), (250, 250, 250), (10, 10, 10)]
    for ci, cls in enumerate(classes):
        for i in range(per_class):
            write_image(root / name / cls / f"{cls.lower()}_{i}.jpg", seed=hash((name, ci, i)) % 2**32, size=size,
                        color=palette[ci % len(palette)])
    return root / name


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory) -> Path:
    """Tiny look-alikes of AID (all 30 classes, 4 images each) and RSSCN7 (8 a class), 36 px."""
    from da.data.registry import AID, RSSCN7

    root = tmp_path_factory.mktemp("data")
    make_folder_dataset(root, "AID", list(AID.classes), 4, size=36)
    make_folder_dataset(root, "RSSCN7", list(RSSCN7.classes), 8, size=36)
    return root
