"""Object detection (issue 20): datasets with boxes, box-aware augmentation and anchors fitted to the boxes.

``data`` reads the NWPU VHR-10, Pascal VOC and COCO layouts into one form (``DetectionSample``) and splits it
by image; ``transforms`` augments images and boxes together; ``anchors`` fits anchor shapes to the training
boxes.  The detector, its training and its evaluation come later.
"""

from da.detection.data import (
    DETECTION_DATASETS,
    NWPU_VHR10,
    DetectionDataError,
    DetectionSample,
    DetectionSet,
    DetectionSplits,
    load_detection,
    read_coco,
    read_nwpu_vhr10,
    read_voc,
    split_by_image,
)

__all__ = [
    "DETECTION_DATASETS",
    "NWPU_VHR10",
    "DetectionDataError",
    "DetectionSample",
    "DetectionSet",
    "DetectionSplits",
    "load_detection",
    "read_coco",
    "read_nwpu_vhr10",
    "read_voc",
    "split_by_image",
]
