"""studio.manifest: damaged memos, sidecars and logs are told as damage, and the log never writes through a link."""

import pytest

from studio import manifest

DEEP = "[" * 200_000  # nesting deeper than the JSON parser's recursion limit


def test_a_deeply_nested_memo_is_only_hashed_again(tmp_path):
    memo, data = tmp_path / "file-hashes.json", tmp_path / "weights.bin"
    memo.write_text(DEEP)
    data.write_bytes(b"abc")
    hashes = manifest.FileHashes(memo)
    assert hashes.known == {}
    assert hashes(data) == manifest.sha256_file(data)


def test_a_deeply_nested_sidecar_is_a_value_error(tmp_path):
    sidecar = tmp_path / "it-1.manifest.json"
    sidecar.write_text(DEEP)
    with pytest.raises(ValueError, match=r"^not JSON \(nested too deeply\)$"):
        manifest.load_sidecar(sidecar)


def test_a_sidecar_that_is_not_json_says_where(tmp_path):
    sidecar = tmp_path / "it-1.manifest.json"
    sidecar.write_text('{"item": "a\tb"}')  # a tab in a string: JSON wants it escaped
    with pytest.raises(ValueError, match=r"^not JSON \(line 1, column 12: Invalid control character at\)$"):
        manifest.load_sidecar(sidecar)


def test_a_deeply_nested_log_line_is_skipped(tmp_path):
    log = tmp_path / "manifest.jsonl"
    manifest.append_line(log, {"a": 1})
    with open(log, "a") as f:
        f.write(DEEP + "\n")
    manifest.append_line(log, {"b": 2})
    assert manifest.read_lines(log) == [{"a": 1}, {"b": 2}]


def test_a_linked_log_is_replaced_and_its_target_left_alone(tmp_path):
    target, log = tmp_path / "elsewhere.jsonl", tmp_path / "out" / "manifest.jsonl"
    log.parent.mkdir()
    manifest.append_line(target, {"a": 1})
    before = target.read_bytes()
    log.symlink_to(target)
    manifest.append_line(log, {"b": 2})
    assert not log.is_symlink()
    assert target.read_bytes() == before
    assert manifest.read_lines(log) == [{"a": 1}, {"b": 2}]
    dangling = tmp_path / "out" / "other.jsonl"
    dangling.symlink_to(tmp_path / "gone.jsonl")
    manifest.append_line(dangling, {"c": 3})
    assert not (tmp_path / "gone.jsonl").exists()
    assert manifest.read_lines(dangling) == [{"c": 3}]


def test_the_memo_forgets_deleted_files(tmp_path):
    """A shared --cache-dir's memo would otherwise grow with every output ever hashed."""
    memo, kept, gone = tmp_path / "file-hashes.json", tmp_path / "kept.png", tmp_path / "gone.png"
    kept.write_bytes(b"k")
    gone.write_bytes(b"g")
    hashes = manifest.FileHashes(memo)
    for path in (kept, gone):
        hashes(path)
    assert hashes.save() is None and len(manifest._read_memo(memo)) == 2
    gone.unlink()
    other = tmp_path / "other.png"
    other.write_bytes(b"o")
    again = manifest.FileHashes(memo)
    assert again(kept) == manifest.sha256_file(kept)
    again(other)
    assert again.save() is None
    assert sorted(manifest._read_memo(memo)) == [str(kept.resolve()), str(other.resolve())]


A, B, C = "a" * 64, "b" * 64, "c" * 64  # three files' sha256


def test_inputs_named_by_absolute_paths_before_match_the_same_files_named_now(tmp_path):
    """Manifests before 2026-11-28 named every input by its absolute path (a font's with '#index' for another
    face); they still check out (a batch's items done, a rerender's inputs unchanged) when each name has its
    file, and not when one differs, two are swapped or the project moved (other paths)."""
    folder = tmp_path.resolve()  # as the recorder named them: the layout's folder resolved
    now = {"image:logo.png": A, "font:/usr/share/fonts/x.ttc": B}
    legacy = {f"image:{folder}/logo.png": A, "font:/usr/share/fonts/x.ttc#1": B}
    assert manifest.changed_input(now, now, tmp_path) is None
    assert manifest.changed_input(legacy, now, tmp_path) is None
    assert manifest.changed_input(legacy, {**now, "image:logo.png": C}, tmp_path) == f"image:{folder}/logo.png"
    swapped = {f"image:{folder}/logo.png": B, "font:/usr/share/fonts/x.ttc": A}
    assert manifest.changed_input(swapped, now, tmp_path) == "font:/usr/share/fonts/x.ttc"
    assert manifest.changed_input(legacy, now, tmp_path / "moved") == f"image:{folder}/logo.png"
    assert manifest.changed_input({"image:logo.png": B, "font:/usr/share/fonts/x.ttc": A}, now, tmp_path) == \
        "font:/usr/share/fonts/x.ttc"


def test_inputs_outside_the_layouts_folder_keep_which_file_is_which(tmp_path):
    """Files outside the layout's folder are named by their absolute paths now too; two swapped were the same
    inputs (every name absolute, as a legacy manifest's: compared by the sorted hashes alone)."""
    now = {"image:/assets/a.png": A, "image:/assets/b.png": B}
    assert manifest.changed_input(now, now, tmp_path) is None
    assert manifest.changed_input({"image:/assets/a.png": B, "image:/assets/b.png": A}, now, tmp_path) == \
        "image:/assets/a.png"
    assert manifest.changed_input(now, {"image:/assets/a.png": A}, tmp_path) == "image:/assets/b.png"


def test_models_keep_which_is_which_whatever_their_spelling(tmp_path, monkeypatch):
    """'m', './m' and '/abs/m' are one model (a record's names read from its working folder), but each keeps its
    own files: two models' files swapped were the same sorted list."""
    root = tmp_path.resolve()
    for name in ("mA", "mB", "work"):
        (root / name).mkdir()
    monkeypatch.chdir(root / "work")
    files_a, files_b = {"transformer/w": A}, {"transformer/w": B}
    recorded = manifest.models_by_identity({"mA": files_a, "./mB": files_b}, str(root))
    assert recorded == {str(root / "mA"): files_a, str(root / "mB"): files_b}
    assert manifest.models_by_identity({str(root / "mA"): files_a, "../mB/": files_b}) == recorded
    assert manifest.models_by_identity({"../mA": files_b, "../mB": files_a}) != recorded
    assert manifest.models_by_identity({"someone/model": files_a}, str(root)) == {"someone/model": files_a}


def test_models_swapped_differ_and_models_moved_with_their_project_are_the_same(tmp_path, monkeypatch):
    """The same model folders with each other's files are other models; a project moved whole, its models
    inside it (the layout names them by absolute path, so the record's paths are gone), has the same models
    when their files are the same."""
    root = tmp_path.resolve()
    for name in ("old/mA", "old/mB", "new/mA", "new/mB"):
        (root / name).mkdir(parents=True)
    monkeypatch.chdir(root)
    files_a, files_b = {"transformer/w": A}, {"transformer/w": B}
    recorded = {str(root / "old/mA"): files_a, str(root / "old/mB"): files_b}
    assert manifest.same_models(recorded, str(root), {"old/mA": files_a, "./old/mB": files_b})
    assert not manifest.same_models(recorded, str(root), {"old/mA": files_b, "old/mB": files_a})
    assert manifest.same_models(recorded, str(root), {str(root / "new/mA"): files_a, str(root / "new/mB"): files_b})
    assert not manifest.same_models(recorded, str(root), {str(root / "new/mA"): files_a, str(root / "new/mB"): files_a})
