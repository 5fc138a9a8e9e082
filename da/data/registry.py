"""Registry of remote-sensing scene datasets: official layout, class names, sizes, download sources.

Every dataset lives under a data root (``--data-root`` or ``DA_DATA_ROOT``, default ``./data``) in the
layout of its official release, so an unpacked archive works as it is.  ``folder:<path>`` names any other
folder of class folders (``<path>/<class>/<image>``).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

from da.settings import declare_canonical, declare_check

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")


@dataclass(frozen=True)
class DatasetSpec:
    """What we know of one dataset's official release."""

    name: str
    image_dir: str  # relative to the data root: the folder that holds one folder per class
    classes: tuple[str, ...]
    num_images: int | None
    image_size: int | None  # side in pixels of the official release
    homepage: str
    citation: str
    url: str | None = None  # a direct archive URL whose checksum is known (a pinned revision of a mirror)
    md5: str | None = None
    url_source: str = ""  # where the URL and md5 were taken from
    archive_extract_dir: str = ""  # where under the root the archive is unpacked
    extensions: tuple[str, ...] = IMAGE_EXTENSIONS
    notes: str = ""
    # A label-shifted view of another registered dataset (its images, its class maps: ``map_as``): as a
    # target, its train and test splits keep per class a share falling geometrically from 1 to
    # 1 / long_tail_imbalance, in a class order drawn from ``long_tail_seed``.
    long_tail_imbalance: float = 0.0
    long_tail_seed: int = 0
    map_as: str = ""

    @property
    def archive_name(self) -> str:
        """The archive's file name (the last part of its URL)."""
        return self.url.rsplit("/", 1)[-1] if self.url else ""

    @property
    def map_name(self) -> str:
        """The name class maps know this dataset by."""
        return self.map_as or self.name

    def folder(self, root: str | os.PathLike) -> Path:
        return Path(root) / self.image_dir

    def layout(self) -> str:
        """The on-disk layout a user must reproduce by hand, as text."""
        example = self.classes[0] if self.classes else "<class>"
        return f"<data-root>/{self.image_dir}/<class folder>/<image>  (e.g. <data-root>/{self.image_dir}/{example}/...)"


NWPU_RESISC45 = DatasetSpec(
    name="NWPU-RESISC45",
    image_dir="NWPU-RESISC45",
    classes=(
        "airplane", "airport", "baseball_diamond", "basketball_court", "beach", "bridge", "chaparral",
        "church", "circular_farmland", "cloud", "commercial_area", "dense_residential", "desert", "forest",
        "freeway", "golf_course", "ground_track_field", "harbor", "industrial_area", "intersection",
        "island", "lake", "meadow", "medium_residential", "mobile_home_park", "mountain", "overpass",
        "palace", "parking_lot", "railway", "railway_station", "rectangular_farmland", "river",
        "roundabout", "runway", "sea_ice", "ship", "snowberg", "sparse_residential", "stadium",
        "storage_tank", "tennis_court", "terrace", "thermal_power_station", "wetland",
    ),
    num_images=31_500,
    image_size=256,
    homepage="https://gcheng-nwpu.github.io/#Datasets",
    citation="Cheng, Han and Lu, Remote Sensing Image Scene Classification: Benchmark and State of the Art, Proc. IEEE 2017",
    # the authors distribute a RAR through OneDrive/Baidu; torchgeo mirrors it as a zip on the Hugging Face hub
    url="https://hf.co/datasets/torchgeo/resisc45/resolve/a826b44d938a883185f11ebe3d512d38b464312f/NWPU-RESISC45.zip",
    md5="75206b2e16446591afa88e2628744886",
    url_source="torchgeo's resisc45.py (a pinned revision of its Hugging Face mirror)",
)

AID = DatasetSpec(
    name="AID",
    image_dir="AID",
    classes=(
        "Airport", "BareLand", "BaseballField", "Beach", "Bridge", "Center", "Church", "Commercial",
        "DenseResidential", "Desert", "Farmland", "Forest", "Industrial", "Meadow", "MediumResidential",
        "Mountain", "Park", "Parking", "Playground", "Pond", "Port", "RailwayStation", "Resort", "River",
        "School", "SparseResidential", "Square", "Stadium", "StorageTanks", "Viaduct",
    ),
    num_images=10_000,
    image_size=600,
    homepage="https://captain-whu.github.io/AID/",
    citation="Xia et al., AID: A Benchmark Data Set for Performance Evaluation of Aerial Scene Classification, TGRS 2017",
)

UC_MERCED = DatasetSpec(
    name="UCMerced",
    image_dir="UCMerced_LandUse/Images",
    classes=(
        "agricultural", "airplane", "baseballdiamond", "beach", "buildings", "chaparral",
        "denseresidential", "forest", "freeway", "golfcourse", "harbor", "intersection",
        "mediumresidential", "mobilehomepark", "overpass", "parkinglot", "river", "runway",
        "sparseresidential", "storagetanks", "tenniscourt",
    ),
    num_images=2_100,
    image_size=256,
    homepage="http://weegee.vision.ucmerced.edu/datasets/landuse.html",
    citation="Yang and Newsam, Bag-of-Visual-Words and Spatial Extensions for Land-Use Classification, ACM GIS 2010",
    # the original host serves plain http with an expired certificate; this is torchgeo's pinned mirror
    url="https://hf.co/datasets/torchgeo/ucmerced/resolve/7c5ef3454d9b1cccfa7ccde0c01fc8f00a45909a/UCMerced_LandUse.zip",
    md5="5b7ec56793786b6dc8a908e8854ac0e4",
    url_source="torchgeo's ucmerced.py (a pinned revision of its Hugging Face mirror; same md5 as the original)",
)

RSSCN7 = DatasetSpec(
    name="RSSCN7",
    image_dir="RSSCN7",
    classes=("aGrass", "bField", "cIndustry", "dRiverLake", "eForest", "fResident", "gParking"),
    num_images=2_800,
    image_size=400,
    homepage="https://sites.google.com/site/qinzoucn/documents",
    citation="Zou et al., Deep Learning Based Feature Selection for Remote Sensing Scene Classification, GRSL 2015",
)

EUROSAT = DatasetSpec(
    name="EuroSAT",
    image_dir="EuroSAT/2750",
    classes=(
        "AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial", "Pasture",
        "PermanentCrop", "Residential", "River", "SeaLake",
    ),
    num_images=27_000,
    image_size=64,
    homepage="https://github.com/phelber/EuroSAT",
    citation="Helber et al., EuroSAT: A Novel Dataset and Deep Learning Benchmark for Land Use and Land Cover Classification, JSTARS 2019",
    url="https://huggingface.co/datasets/torchgeo/eurosat/resolve/c877bcd43f099cd0196738f714544e355477f3fd/EuroSAT.zip",
    md5="c8fa014336c82ac7804f0398fcb19387",
    url_source="torchvision's EuroSAT (a pinned revision of torchgeo's Hugging Face mirror; same md5 as the original)",
    archive_extract_dir="EuroSAT",
    notes="The RGB JPEG release (EuroSAT.zip), not the 13-band EuroSATallBands.",
)

WHU_RS19 = DatasetSpec(
    name="WHU-RS19",
    image_dir="WHU-RS19",
    classes=(
        "Airport", "Beach", "Bridge", "Commercial", "Desert", "Farmland", "footballField", "Forest",
        "Industrial", "Meadow", "Mountain", "Park", "Parking", "Pond", "Port", "railwayStation",
        "Residential", "River", "Viaduct",
    ),
    num_images=1_005,
    image_size=600,
    homepage="https://captain-whu.github.io/BED4RS/",
    citation="Xia et al., Structural High-resolution Satellite Image Indexing, ISPRS TC VII Symposium 2010",
)

RSSCN7_LT = dataclasses.replace(
    RSSCN7, name="RSSCN7-LT", long_tail_imbalance=10.0, long_tail_seed=0, map_as="RSSCN7",
    notes="RSSCN7's images with a long-tailed class prior (10:1) in its target train and test splits, to "
          "study label shift; nothing to download beyond RSSCN7.")

DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec for spec in (NWPU_RESISC45, AID, UC_MERCED, RSSCN7, RSSCN7_LT, EUROSAT, WHU_RS19)
}
# Common spellings people type on the command line.
_ALIASES = {"resisc45": "NWPU-RESISC45", "nwpu": "NWPU-RESISC45", "ucm": "UCMerced", "uc_merced": "UCMerced",
            "ucmerced_landuse": "UCMerced", "whu_rs19": "WHU-RS19", "eurosat_rgb": "EuroSAT"}


def known_names() -> list[str]:
    return sorted(DATASETS) + ["folder:<path>"]


def get_spec(name: str, root: str | os.PathLike | None = None) -> DatasetSpec:
    """The spec of a registered dataset, or a generic one for ``folder:<path>``.

    For ``folder:<path>`` the classes are the sub-folders of ``<path>`` (relative paths are taken
    from the data root), sorted.
    """
    if name.startswith("folder:"):
        path = Path(name[len("folder:"):]).expanduser()
        if not path.is_absolute() and root is not None:
            path = Path(root) / path
        if not path.is_dir():
            raise FileNotFoundError(f"dataset {name!r}: folder {path} does not exist; give a folder that holds one sub-folder per class")
        classes = tuple(sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")))
        if not classes:
            raise ValueError(f"dataset {name!r}: {path} holds no class folders (expected <path>/<class>/<image>)")
        return DatasetSpec(name=name, image_dir=str(path), classes=classes, num_images=None, image_size=None,
                           homepage="", citation="")
    key = name if name in DATASETS else _ALIASES.get(name.lower().replace("-", "_"))
    if key is None:
        key = next((k for k in DATASETS if k.lower() == name.lower()), None)
    if key is None:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(known_names())}")
    return DATASETS[key]


def default_data_root() -> Path:
    """``DA_DATA_ROOT`` if set, else ``./data``."""
    return Path(os.environ.get("DA_DATA_ROOT", "data"))


def missing_dataset_message(spec: DatasetSpec, root: str | os.PathLike) -> str:
    how = (f"run with --download to fetch {spec.url} (md5 {spec.md5})" if spec.url
           else f"download it from {spec.homepage or 'its publisher'} and unpack it")
    return (f"dataset {spec.name}: folder {spec.folder(root)} not found. {how}, so that the layout is "
            f"{spec.layout()}. Set the data root with --data-root or DA_DATA_ROOT (now {root}).")


def _check_name(flag: str, name: str) -> None:
    """RunConfig.validate()'s check of a dataset field (a folder: dataset is checked when it is read)."""
    if name and not name.startswith("folder:"):
        try:
            get_spec(name)
        except ValueError as err:
            raise ValueError(f"--{flag}: {err}") from None


declare_check("stage1", lambda cfg: _check_name("stage1", cfg.stage1 if cfg.stages == 2 else ""))
declare_check("source", lambda cfg: _check_name("source", cfg.source))
declare_check("target", lambda cfg: _check_name("target", cfg.target))


def _canonical_name(name: str) -> str:
    """A dataset name as the registry spells it; a folder: dataset, an empty or unknown name as given (the
    check then names the problem)."""
    if not name or name.startswith("folder:"):
        return name
    try:
        return get_spec(name).name
    except ValueError:
        return name


for _field in ("stage1", "source", "target"):
    declare_canonical(_field, _canonical_name)
