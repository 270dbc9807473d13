"""A miniature datasets root (CrisisMMD, CrisisLexT26, Figure Eight) in the real files' formats,
for tests of the readers and of cross-event evaluation that must not need ../shared."""

from __future__ import annotations

import csv
from pathlib import Path

ANN_COLS = [
    "tweet_id",
    "image_id",
    "text_info",
    "text_info_conf",
    "image_info",
    "image_info_conf",
    "text_human",
    "text_human_conf",
    "image_human",
    "image_human_conf",
    "image_damage",
    "image_damage_conf",
    "tweet_text",
    "image_url",
    "image_path",
]
SPLIT_COLS = [
    "event_name",
    "tweet_id",
    "image_id",
    "tweet_text",
    "image",
    "label",
    "label_text",
    "label_image",
    "label_text_image",
]


def _tsv(path: Path, cols: list[str], rows: list[dict[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        f.write("\t".join(cols) + "\n")
        for r in rows:
            f.write("\t".join(r.get(c, "") for c in cols) + "\n")


def make_root(root: Path) -> Path:
    """Write the miniature root and return it."""
    mmd = root / "crisismmd"
    rows = [
        ("1", "informative", "injured_or_dead_people", "Two dead after the flood in Colombo"),
        ("2", "not_informative", "not_humanitarian", "lol my cat https://t.co/abc"),
        ("3", "informative", "vehicle_damage", "Cars swept away on Galle road"),
        ("4", "informative", "rescue_volunteering_or_donation_effort", "Donate to flood relief"),
    ]
    _tsv(
        mmd / "annotations" / "srilanka_floods_final_data.tsv",
        ANN_COLS,
        [
            {"tweet_id": i, "text_info": info, "text_human": hum, "tweet_text": text}
            for i, info, hum, text in rows
        ],
    )
    # tweet 3 is in a dev split: held out from training wherever a copy of it lands
    for split, ids in (("train", ["1", "2", "4"]), ("dev", ["3"]), ("test", [])):
        _tsv(
            mmd / "splits" / "agreed" / f"task_informative_text_img_agreed_lab_{split}.tsv",
            SPLIT_COLS,
            [{"event_name": "srilanka_floods", "tweet_id": i} for i in ids],
        )
    lex = root / "crisislex_t26" / "2013_Test_floods"
    lex.mkdir(parents=True)
    with (lex / "2013_Test_floods-tweets_labeled.csv").open("w", newline="") as f:
        w = csv.writer(f, quoting=csv.QUOTE_ALL)
        w.writerow(
            [
                "Tweet ID",
                " Tweet Text",
                " Information Source",
                " Information Type",
                " Informativeness",
            ]
        )
        w.writerow(
            [
                "10",
                "Inundaciones en la ciudad, evacuen ya",
                "Media",
                "Caution and advice",
                "Related and informative",
            ]
        )
        w.writerow(
            [
                "11",
                "RT @someone: Cars swept away on Galle road!",
                "Media",
                "Infrastructure and utilities",
                "Related and informative",
            ]
        )
        w.writerow(
            [
                "12",
                "Praying for everyone",
                "Outsiders",
                "Sympathy and support",
                "Related - but not informative",
            ]
        )
        w.writerow(["13", "Great pizza tonight", "Outsiders", "Not labeled", "Not related"])
        w.writerow(["14", "no label at all", "Outsiders", "Not applicable", "Not applicable"])
    f8 = root / "figure8"
    f8.mkdir()
    with (f8 / "disaster_response_training.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "split", "message", "original", "genre", "related", "aid_related"])
        w.writerow(["100", "train", "We need water and food in Leogane", "", "direct", "1", "1"])
        w.writerow(["101", "train", "The weather is nice", "", "news", "0", "0"])
        w.writerow(["102", "train", "Storm is coming", "", "social", "1", "0"])
        w.writerow(["103", "train", "ambiguous", "", "social", "2", "0"])
    return root
