"""MovieLens loaders on small files written in each release's format (never the real data)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from batch.data import DatasetError
from batch.datasets import load_dataset, load_ml_1m, load_ml_100k, load_ml_latest_small
from recsys.commands.data import app

pytestmark = pytest.mark.unit

GENRES_100K = [
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance",
    "Sci-Fi", "Thriller", "War", "Western",
]  # fmt: skip


def _flags(*genres: str) -> str:
    return "|".join("1" if g in genres else "0" for g in GENRES_100K)


def write_ml_100k(root: Path, data_lines: list[str] | None = None) -> Path:
    folder = root / "ml-100k"
    folder.mkdir(parents=True)
    lines = data_lines or [
        "196\t242\t3\t881250949",
        "186\t302\t5\t891717742",
        "22\t242\t1\t878887116",
    ]
    (folder / "u.data").write_text("\n".join(lines) + "\n")
    items = [
        f"242|Kolya (1996)|24-Jan-1997||http://x|{_flags('Comedy')}",
        f"302|L.A. Confidential (1997)|01-Jan-1997||http://x|"
        f"{_flags('Crime', 'Film-Noir', 'Mystery')}",
        f"267|unknown|01-Jan-1995||http://x|{_flags('unknown')}",
        f"1300|Café au lait (Métisse) (1993)|||http://x|{_flags('Comedy')}",
    ]
    (folder / "u.item").write_bytes(("\n".join(items) + "\n").encode("latin-1"))
    genre_lines = [f"{g}|{i}" for i, g in enumerate(GENRES_100K)]
    (folder / "u.genre").write_text("\n".join(genre_lines) + "\n\n")
    (folder / "u.user").write_text(
        "196|49|M|writer|55105\n186|39|F|executive|00000\n22|25|M|writer|40206\n"
    )
    return folder


def write_ml_1m(root: Path) -> Path:
    folder = root / "ml-1m"
    folder.mkdir(parents=True)
    (folder / "ratings.dat").write_text(
        "1::1193::5::978300760\n2::661::3::978302109\n1::661::4::978301968\n"
    )
    movies = (
        "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n"
        "661::Pokémon: le film (1996)::Animation|Children's\n"
    )
    (folder / "movies.dat").write_bytes(movies.encode("latin-1"))
    (folder / "users.dat").write_text("1::F::1::10::48067\n2::M::56::16::70072\n")
    return folder


def write_ml_latest_small(root: Path, extra_rating: str | None = None) -> Path:
    folder = root / "ml-latest-small"
    folder.mkdir(parents=True)
    ratings = ["userId,movieId,rating,timestamp", "1,11,4.0,964982703", "2,40697,0.5,964981247"]
    if extra_rating is not None:
        ratings.append(extra_rating)
    ratings.append("1,176601,3.5,964982224")
    (folder / "ratings.csv").write_text("\n".join(ratings) + "\n")
    (folder / "movies.csv").write_text(
        "movieId,title,genres\n"
        '11,"American President, The (1995)",Comedy|Drama|Romance\n'
        "40697,Babylon 5,Sci-Fi\n"
        "176601,Black Mirror,(no genres listed)\n"
        "32,Fawlty Towers (1975-1979),Comedy\n"
    )
    return folder


def test_ml_100k_parses_exact_values_in_file_order(tmp_path: Path) -> None:
    write_ml_100k(tmp_path)
    data = load_ml_100k(tmp_path)
    inter = data.interactions
    assert list(inter.columns[:5]) == ["user_id", "item_id", "ts", "event_type", "weight"]
    assert inter["user_id"].tolist() == ["196", "186", "22"]  # file order, not sorted
    assert inter["item_id"].tolist() == ["242", "302", "242"]
    assert inter["ts"].tolist() == [881250949, 891717742, 878887116]
    assert inter["ts"].dtype == np.int64
    assert inter["weight"].dtype == np.float32
    assert inter["weight"].tolist() == [1.0, 1.0, 1.0]  # a rating is one interaction
    assert inter["rating"].tolist() == [3.0, 5.0, 1.0]
    assert set(inter["event_type"]) == {"rating"}
    assert data.skipped_rows == 0

    items = data.items.set_index("item_id")
    assert items.loc["302", "title"] == "L.A. Confidential"
    assert items.loc["302", "genres"] == ("Crime", "Film-Noir", "Mystery")
    assert items.loc["242", "year"] == 1996
    assert items.loc["267", "genres"] == ()  # the "unknown" flag means no genre
    assert items.loc["267", "year"] == 1995  # no year in the title: the release date's
    assert items.loc["1300", "title"] == "Café au lait (Métisse)"  # latin-1, inner parens kept
    assert data.items["year"].dtype == "Int64"

    assert data.users is not None
    users = data.users.set_index("user_id")
    assert users.loc["186"].tolist() == [39, "F", "executive", "00000"]  # zip stays text


def test_ml_1m_parses_double_colon_files(tmp_path: Path) -> None:
    write_ml_1m(tmp_path)
    data = load_ml_1m(tmp_path)
    assert data.interactions[["user_id", "item_id", "ts"]].values.tolist() == [
        ["1", "1193", 978300760],
        ["2", "661", 978302109],
        ["1", "661", 978301968],
    ]
    items = data.items.set_index("item_id")
    assert items.loc["661", "title"] == "Pokémon: le film"
    assert items.loc["661", "genres"] == ("Animation", "Children's")
    assert items.loc["1193", "year"] == 1975
    assert data.users is not None
    users = data.users.set_index("user_id")
    assert users.loc["2", "occupation"] == "self-employed"  # code 16, named
    assert users.loc["1", "age"] == 1
    assert users.loc["1", "gender"] == "F"


def test_ml_latest_small_handles_quotes_missing_years_and_no_genres(tmp_path: Path) -> None:
    write_ml_latest_small(tmp_path)
    data = load_ml_latest_small(tmp_path)
    assert data.interactions["rating"].tolist() == [4.0, 0.5, 3.5]
    assert data.interactions["ts"].tolist() == [964982703, 964981247, 964982224]
    items = data.items.set_index("item_id")
    assert items.loc["11", "title"] == "American President, The"
    assert items.loc["11", "genres"] == ("Comedy", "Drama", "Romance")
    assert pd.isna(items.loc["40697", "year"])
    assert items.loc["40697", "title"] == "Babylon 5"
    assert items.loc["176601", "genres"] == ()
    assert items.loc["32", "title"] == "Fawlty Towers"
    assert items.loc["32", "year"] == 1975
    assert data.users is not None
    assert data.users["user_id"].tolist() == ["1", "2"]


@pytest.mark.parametrize(
    ("bad_line", "expected"),
    [
        ("7\t8\t4", "u.data:2: expected 4 fields"),
        ("7\t8\tfour\t881250949", "u.data:2: rating 'four' is not a number"),
        ("7\t8\t9\t881250949", "u.data:2: rating '9' is outside"),
        ("7\t8\t4\t88125.5", "u.data:2: ts '88125.5' is not an integer"),
        ("\t8\t4\t881250949", "u.data:2: empty user_id"),
    ],
)
def test_malformed_row_names_file_and_line(tmp_path: Path, bad_line: str, expected: str) -> None:
    write_ml_100k(tmp_path, ["196\t242\t3\t881250949", bad_line, "22\t242\t1\t878887116"])
    with pytest.raises(DatasetError, match=re.escape(expected)):
        load_ml_100k(tmp_path)


def test_skip_malformed_counts_skipped_rows(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    lines = ["196\t242\t3\t881250949", "bad", "", "7\t8\tx\t1", "22\t242\t1\t878887116"]
    write_ml_100k(tmp_path, lines)
    data = load_ml_100k(tmp_path, skip_malformed=True)
    assert data.skipped_rows == 2  # the blank line is not a row
    assert data.interactions["user_id"].tolist() == ["196", "22"]
    assert "skipped 2 malformed row(s)" in caplog.text


def test_csv_line_numbers_count_the_header_and_quoted_line_breaks(tmp_path: Path) -> None:
    folder = write_ml_latest_small(tmp_path, extra_rating="3,11,4.0,964982703,extra")
    movies = (
        (folder / "movies.csv")
        .read_text()
        .replace('"American President, The (1995)"', '"American\nPresident (1995)"')
    )
    (folder / "movies.csv").write_text(movies + "99,Broken (2000)\n")
    with pytest.raises(
        DatasetError, match=r"ratings\.csv:4: expected 4 fields separated by ',', got 5"
    ):
        load_ml_latest_small(tmp_path)
    data = load_ml_latest_small(tmp_path, skip_malformed=True)
    assert data.skipped_rows == 2  # one rating, one movie (line 7: the quoted title spans two)
    (folder / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,11,4.0,964982703\n")
    with pytest.raises(DatasetError, match=r"movies\.csv:7: expected 3"):
        load_ml_latest_small(tmp_path)


def test_empty_dataset_is_an_error(tmp_path: Path) -> None:
    folder = write_ml_100k(tmp_path)
    (folder / "u.data").write_text("")
    with pytest.raises(DatasetError, match="no interaction rows"):
        load_ml_100k(tmp_path)
    (folder / "u.data").write_text("x\n")
    with pytest.raises(DatasetError, match=r"no interaction rows \(1 malformed rows skipped\)"):
        load_ml_100k(tmp_path, skip_malformed=True)


def test_missing_dataset_says_where_it_looked_and_how_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as info:
        load_dataset("ml-100k", tmp_path)
    message = str(info.value)
    assert str(tmp_path / "ml-100k" / "u.data") in message
    assert "recsys data download ml-100k" in message
    assert "RECSYS_DATA_DIR" in message


def test_load_dataset_by_name_and_unknown_name(tmp_path: Path) -> None:
    write_ml_1m(tmp_path)
    assert load_dataset("ml-1m", tmp_path).n_interactions == 3
    with pytest.raises(DatasetError, match="unknown dataset 'ml-2m'"):
        load_dataset("ml-2m", tmp_path)


def test_cli_info_prints_figures_and_errors_in_one_line(tmp_path: Path) -> None:
    write_ml_100k(tmp_path)
    runner = CliRunner()
    shown = runner.invoke(app, ["info", "ml-100k", "--data-dir", str(tmp_path)])
    assert shown.exit_code == 0, shown.output
    assert "rows" in shown.output
    assert "3" in shown.output
    assert "1997" in shown.output
    failed = runner.invoke(app, ["info", "ml-1m", "--data-dir", str(tmp_path)])
    assert failed.exit_code == 1
    assert failed.output.startswith("error: ml-1m not found")
    assert "Traceback" not in failed.output
