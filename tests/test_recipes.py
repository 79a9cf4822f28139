"""Every shipped recipe loads, reads ids from its corpus's real path layout, and splits by subject."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest

from eegfm.ingest.recipe import RecipeError, assign_split, available_recipes, discover, load_recipe

SHIPPED = {"tueg", "tuab", "tusz", "chbmit", "siena", "eegmmidb", "sleep-edf", "biosemi", "generic"}

# Real paths of each corpus (relative to the recipe root) → (subject, session, recording, reference).
LAYOUTS = {
    "tueg": [
        (
            "edf/000/aaaaaaaa/s001_2015_12_30/01_tcp_ar/aaaaaaaa_s001_t000.edf",
            ("aaaaaaaa", "s001", "aaaaaaaa_s001_t000", "tcp_ar"),
        ),
        (
            "edf/012/aaaaamde/s003_2012/02_tcp_le/aaaaamde_s003_t001.edf",
            ("aaaaamde", "s003", "aaaaamde_s003_t001", "tcp_le"),
        ),
        (
            "edf/001/aaaaaabc/s002_2003_04_28/03_tcp_ar_a/aaaaaabc_s002_t000.edf",
            ("aaaaaabc", "s002", "aaaaaabc_s002_t000", "tcp_ar_a"),
        ),
        (
            "000/00000002/s001_2003/04_tcp_le_a/00000002_s001_t000.edf",
            ("00000002", "s001", "00000002_s001_t000", "tcp_le_a"),
        ),
    ],
    "tuab": [
        (
            "edf/train/normal/01_tcp_ar/aaaaamcz_s001_t000.edf",
            ("aaaaamcz", "s001", "aaaaamcz_s001_t000", "tcp_ar"),
        )
    ],
    "tusz": [
        (
            "edf/dev/aaaaaajy/s001_2003/02_tcp_le/aaaaaajy_s001_t000.edf",
            ("aaaaaajy", "s001", "aaaaaajy_s001_t000", "tcp_le"),
        )
    ],
    "chbmit": [
        ("chb01/chb01_03.edf", ("chb01", "", "chb01_03", "bipolar")),
        ("chb17/chb17b_63.edf", ("chb17", "", "chb17b_63", "bipolar")),
        # chb21 is chb01 recorded 1.5 years later: one subject (recipe `same_subject`), hence one split.
        ("chb21/chb21_19.edf", ("chb01", "", "chb21_19", "bipolar")),
    ],
    "siena": [("PN00/PN00-1.edf", ("PN00", "", "PN00-1", "unknown"))],
    "eegmmidb": [("S001/S001R04.edf", ("S001", "", "S001R04", "unknown"))],
    "sleep-edf": [
        ("sleep-cassette/SC4001E0-PSG.edf", ("400", "1", "SC4001E0-PSG", "bipolar")),
        ("sleep-cassette/SC4001EC-Hypnogram.edf", ("400", "1", "SC4001EC-Hypnogram", "bipolar")),
    ],
    "biosemi": [
        ("sub-01/sub-01_task-rest.bdf", ("sub-01", "", "sub-01_task-rest", "cms_drl")),
        ("sub-02/ses-1/sub-02_ses-1_task-rest.bdf", ("sub-02", "ses-1", "sub-02_ses-1_task-rest", "cms_drl")),
    ],
    "generic": [("EDF/test_reduced.edf", ("EDF/test_reduced", "", "test_reduced", "unknown"))],
}


def test_every_card_recipe_is_shipped() -> None:
    assert set(available_recipes()) >= SHIPPED


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_recipe_loads_and_reads_its_layout(name: str, tmp_path: Path) -> None:
    for rel, _ in LAYOUTS[name]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    found = {f.path: f for f in discover(load_recipe(name, root=str(tmp_path)))}
    for rel, expected in LAYOUTS[name]:
        source = found[rel]
        assert source.skip_reason is None, source
        assert (source.subject, source.session, source.recording, source.reference) == expected, rel


def test_overrides_and_settings() -> None:
    recipe = load_recipe("tueg", ["preprocess.window_s=5", "mains_hz=50"], root="/elsewhere")
    assert recipe.preprocess.window_s == 5 and recipe.mains_hz == 50 and recipe.root == "/elsewhere"
    with pytest.raises(RecipeError, match="unknown key no_such_key"):
        load_recipe("tueg", ["no_such_key=1"])
    with pytest.raises(RecipeError, match=r"unknown key preprocess\.no_such_key"):
        load_recipe("tueg", ["preprocess.no_such_key=1"])
    with pytest.raises(RecipeError, match="no dataset recipe 'nope'"):
        load_recipe("nope")
    with pytest.raises(RecipeError, match="sum to 1"):
        load_recipe("tueg", ["splits.train=0.5"])


def test_recipe_values_are_typed_and_errors_name_the_key() -> None:
    with pytest.raises(RecipeError, match=r"preprocess\.window_s: Value 'abc' .* could not be converted"):
        load_recipe("tueg", ["preprocess.window_s=abc"])
    with pytest.raises(
        RecipeError, match=r"unknown key preprocess\.widow_s; did you mean preprocess\.window_s"
    ):
        load_recipe("tueg", ["preprocess.widow_s=5"])
    with pytest.raises(RecipeError, match=r"mains_hz: Value 'fifty'"):
        load_recipe("tueg", ["mains_hz=fifty"])
    with pytest.raises(RecipeError, match=r"preprocess\.dtype must be float16 or float32"):
        load_recipe("tueg", ["preprocess.dtype=int8"])
    recipe = load_recipe("tueg", ["splits.train=0.85", "splits.extra=0.05", "preprocess.window_s=4"])
    assert recipe.splits == {"train": 0.85, "val": 0.05, "test": 0.05, "extra": 0.05}
    assert recipe.preprocess.window_s == 4.0
    assert isinstance(recipe.include, tuple)


def test_every_recipe_field_is_documented() -> None:
    from dataclasses import fields

    from eegfm.config import field_docs
    from eegfm.ingest.preprocess import PreprocessConfig
    from eegfm.ingest.recipe import Recipe

    for schema in (Recipe, PreprocessConfig):
        assert set(field_docs(schema)) == {f.name for f in fields(schema)}, schema


def test_split_is_a_deterministic_function_of_dataset_and_subject() -> None:
    fractions = {"train": 0.8, "val": 0.1, "test": 0.1}
    splits = [assign_split("tueg", f"subject{i:04d}", fractions) for i in range(4000)]
    assert splits == [assign_split("tueg", f"subject{i:04d}", fractions) for i in range(4000)]
    share = {s: splits.count(s) / len(splits) for s in fractions}
    assert abs(share["train"] - 0.8) < 0.03 and abs(share["val"] - 0.1) < 0.02
    other = [assign_split("tuab", f"subject{i:04d}", fractions) for i in range(4000)]
    assert other != splits  # the dataset is part of the hash


def test_discovery_accounts_for_every_matching_file(tmp_path: Path) -> None:
    for rel in ("a/s1.edf", "a/s1_again.edf", "b/s2.EDF", "notes.txt", "c/odd name.bdf"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    recipe = load_recipe("generic", ["exclude_subjects=[a/s1_again]"], root=str(tmp_path))
    files = {f.path: f for f in discover(recipe)}
    assert sorted(files) == ["a/s1.edf", "a/s1_again.edf", "b/s2.EDF", "c/odd name.bdf"]
    assert files["a/s1_again.edf"].skip_reason == "subject excluded by the recipe (a/s1_again)"
    by_subject = defaultdict(set)
    for f in files.values():
        by_subject[f.subject].add(f.split)
    assert all(len(s) == 1 for s in by_subject.values())


def test_layout_mismatch_is_a_skip_not_a_crash(tmp_path: Path) -> None:
    (tmp_path / "loose.edf").write_bytes(b"x")
    recipe = load_recipe("tueg", root=str(tmp_path))
    (only,) = discover(recipe)
    assert only.split is None and "does not match the recipe's layout" in only.skip_reason


def test_missing_root_says_which_recipe_root_and_how_to_override(tmp_path: Path) -> None:
    recipe = load_recipe("tueg", root=str(tmp_path / "missing"))
    with pytest.raises(RecipeError) as error:
        discover(recipe)
    message = str(error.value)
    assert "'tueg'" in message and str(tmp_path / "missing") in message and "ROOT=" in message
    (tmp_path / "empty").mkdir()
    with pytest.raises(RecipeError, match="no files matching"):
        discover(load_recipe("tueg", root=str(tmp_path / "empty")))


def test_a_recipe_may_name_its_own_splits(real_eeg_dir: Path, tmp_path: Path) -> None:
    from eegfm.config import CONFIG_DIR
    from eegfm.ingest.run import run_shards

    text = (CONFIG_DIR / "datasets" / "generic.yaml").read_text()
    custom = tmp_path / "custom.yaml"
    custom.write_text(text.replace("splits: {train: 0.8, val: 0.1, test: 0.1}", "splits: {pretrain: 1.0}"))
    manifest = run_shards(
        load_recipe(str(custom), root=str(real_eeg_dir)), str(tmp_path / "out"), progress=False
    )
    assert list(manifest["totals"]["per_split"]) == ["pretrain"]
    assert [s["url"] for s in manifest["shards"]] == ["generic-pretrain-0000-000000.tar"]
