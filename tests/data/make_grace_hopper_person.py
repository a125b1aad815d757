"""How tests/data/grace_hopper_person.png was made: the reference person mask of grace_hopper.jpg.

A silhouette polygon placed by hand on the photo; a band of 14 px on both sides of it decided by
OpenCV's GrabCut (colour models of person and background); the result checked by eye on an overlay
(written to /tmp/grace_hopper_overlay.png): cap, glasses, hair by the ears and the jacket's edge
against the flag are where they belong. It is independent of the segmentation model it checks.
Run from the repository root: python tests/data/make_grace_hopper_person.py
"""

import cv2
import numpy as np
from PIL import Image

SRC = "tests/faces/identities/grace_hopper/grace_hopper.jpg"
POLYGON = [
    (190, 50), (260, 25), (330, 45), (355, 80), (372, 110), (375, 190), (360, 230), (352, 300),
    (340, 322), (420, 350), (480, 380), (505, 430), (512, 470), (512, 600), (0, 600), (5, 520),
    (20, 440), (60, 380), (120, 350), (175, 322), (162, 290), (155, 240), (150, 180), (150, 120),
    (165, 80),
]  # fmt: skip
BAND = 14


def main() -> None:
    img = np.asarray(Image.open(SRC).convert("RGB"))
    h, w = img.shape[:2]
    hand = np.zeros((h, w), np.uint8)
    cv2.fillPoly(hand, [np.array(POLYGON, np.int32)], 1)
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * BAND + 1, 2 * BAND + 1))
    tri = np.full((h, w), cv2.GC_BGD, np.uint8)
    tri[cv2.dilate(hand, k) > 0] = cv2.GC_PR_BGD
    tri[hand > 0] = cv2.GC_PR_FGD
    tri[cv2.erode(hand, k) > 0] = cv2.GC_FGD
    bgd, fgd = np.zeros((1, 65)), np.zeros((1, 65))
    cv2.grabCut(cv2.cvtColor(img, cv2.COLOR_RGB2BGR), tri, None, bgd, fgd, 8, cv2.GC_INIT_WITH_MASK)
    mask = np.isin(tri, (cv2.GC_FGD, cv2.GC_PR_FGD))
    Image.fromarray(mask).convert("1").save("tests/data/grace_hopper_person.png", optimize=True)
    over = img.copy()
    over[~mask] = (over[~mask] * 0.3 + np.array([0, 255, 0]) * 0.7).astype(np.uint8)
    Image.fromarray(over).save("/tmp/grace_hopper_overlay.png")


if __name__ == "__main__":
    main()
