"""Hub pushes and Hub resumes, against a local Hub server driven by the real huggingface_hub client."""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path

import pytest
import torch

from nlp_ssl.errors import ConfigError
from nlp_ssl.hub import (
    CHECKPOINT_PATH,
    STAGING_DIR,
    HubCheckpointMissing,
    HubConfig,
    HubError,
    HubPusher,
    resolve_hub_resume,
)
from tests.hub_server import TOKEN, USER, hub  # noqa: F401 - `hub` is the fixture


def tiny_bert():
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=32)
    return BertModel(config)


def make_checkpoint(path: Path, step: int, extra: dict[str, bytes] | None = None) -> Path:
    """A checkpoint folder as the trainer writes it: an HF model plus training state."""
    model = tiny_bert()
    with torch.no_grad():
        model.embeddings.word_embeddings.weight.add_(step)  # each step has different weights
    model.save_pretrained(path)
    (path / "optimizer.bin").write_bytes(b"optimizer state %d" % step)
    (path / "random_states_0.pkl").write_bytes(b"rng %d" % step)
    for name, content in (extra or {}).items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_bytes(content)
    return path


def folder_bytes(path: Path) -> dict[str, bytes]:
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()
            and ".cache" not in p.parts}


def digests(path: Path) -> dict[str, str]:
    return {k: hashlib.sha256(v).hexdigest() for k, v in folder_bytes(path).items()}


def pusher(tmp_path, strategy="end", model_id=f"{USER}/run", **config) -> HubPusher:
    cfg = HubConfig(push=True, model_id=model_id, strategy=strategy, **config)
    return HubPusher(cfg, tmp_path / "out", retries=3, backoff=0.01)


# ---------------------------------------------------------------------- the server, with the plain client
def test_create_upload_snapshot_round_trip(hub, tmp_path):
    from huggingface_hub import HfApi, create_repo, snapshot_download, upload_folder

    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("hello")
    (src / "sub" / "b.bin").write_bytes(bytes(range(256)) * 3)
    assert create_repo("data").repo_id == f"{USER}/data"  # namespace filled in by the Hub
    create_repo(f"{USER}/data", exist_ok=True)
    upload_folder(repo_id=f"{USER}/data", folder_path=src)
    out = Path(snapshot_download(f"{USER}/data", local_dir=tmp_path / "dl"))
    assert folder_bytes(out) == {".gitattributes": hub.files(f"{USER}/data")[".gitattributes"],
                                 **folder_bytes(src)}

    (src / "a.txt").write_text("changed")
    upload_folder(repo_id=f"{USER}/data", folder_path=src, delete_patterns="sub/*", allow_patterns="a.txt")
    api = HfApi()
    assert sorted(api.list_repo_files(f"{USER}/data")) == [".gitattributes", "a.txt"]
    assert [e.path for e in api.list_repo_tree(f"{USER}/data")] == [".gitattributes", "a.txt"]
    assert [c.message for c in hub.repo(f"{USER}/data").history()][1:] == [
        "Upload folder using huggingface_hub", "initial commit"]
    # an unchanged upload makes no empty commit: the server reports blob oids at preupload
    upload_folder(repo_id=f"{USER}/data", folder_path=src, allow_patterns="a.txt")
    assert len(hub.repo(f"{USER}/data").history()) == 3
    again = Path(snapshot_download(f"{USER}/data", cache_dir=tmp_path / "cache"))
    assert (again / "a.txt").read_text() == "changed" and not (again / "sub").exists()


def test_tree_listing_and_missing_entries(hub, tmp_path):
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import RemoteEntryNotFoundError, RepositoryNotFoundError

    api = HfApi()
    hub.create_repo(f"{USER}/t")
    src = tmp_path / "src"
    (src / "x" / "y").mkdir(parents=True)
    (src / "x" / "y" / "z.txt").write_text("z")
    (src / "x" / "w.txt").write_text("w")
    api.upload_folder(repo_id=f"{USER}/t", folder_path=src)
    top = {(type(e).__name__, e.path) for e in api.list_repo_tree(f"{USER}/t", path_in_repo="x")}
    assert top == {("RepoFolder", "x/y"), ("RepoFile", "x/w.txt")}
    deep = {e.path for e in api.list_repo_tree(f"{USER}/t", path_in_repo="x", recursive=True)}
    assert deep == {"x/y", "x/w.txt", "x/y/z.txt"}
    with pytest.raises(RemoteEntryNotFoundError):
        hf_hub_download(f"{USER}/t", "nope.txt", cache_dir=tmp_path / "c")
    with pytest.raises(RepositoryNotFoundError):
        api.repo_info(f"{USER}/absent")
    api.delete_folder("x/y", repo_id=f"{USER}/t")
    assert sorted(hub.files(f"{USER}/t")) == [".gitattributes", "x/w.txt"]


def test_transformers_push_to_hub_then_from_pretrained(hub, tmp_path):
    from transformers import AutoModel

    model = tiny_bert()
    model.push_to_hub(f"{USER}/tiny")
    loaded = AutoModel.from_pretrained(f"{USER}/tiny", cache_dir=tmp_path / "cache")
    assert model.state_dict().keys() == loaded.state_dict().keys()
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name]), name


# ---------------------------------------------------------------------- HubPusher
def test_on_end_pushes_outputs_that_from_pretrained_loads(hub, tmp_path):
    from transformers import AutoModel

    p = pusher(tmp_path, private=True)
    out = tmp_path / "out"
    model = tiny_bert()
    model.save_pretrained(out)
    (out / "all_results.json").write_text('{"eval_loss": 1.5}')
    (out / "README.md").write_text("# run\n\n| eval_loss | 1.5 |\n")  # the trainer's model card
    (out / "plots").mkdir()
    (out / "plots" / "loss.png").write_bytes(b"\x89PNG fake")
    make_checkpoint(out / "checkpoint-10", 10)  # local checkpoints stay local
    assert p.start() == f"{USER}/run"
    assert hub.repo(f"{USER}/run").private
    p.on_end(out)
    summary = p.wait()
    assert [r.what for r in summary.pushed] == ["End of training"]
    files = hub.files(f"{USER}/run")
    assert {"config.json", "model.safetensors", "all_results.json", "plots/loss.png", "README.md"} <= set(files)
    assert not any(name.startswith(("checkpoint-", STAGING_DIR)) for name in files)
    assert b"| eval_loss | 1.5 |" in files["README.md"]
    loaded = AutoModel.from_pretrained(f"{USER}/run", cache_dir=tmp_path / "cache")
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name]), name


def test_checkpoint_strategy_pushes_last_checkpoint_and_resume_downloads_it(hub, tmp_path):
    from transformers import AutoModel

    p = pusher(tmp_path, strategy="checkpoint")
    p.start()
    c1 = make_checkpoint(tmp_path / "out" / "checkpoint-1", 1, {"only_in_1.txt": b"old"})
    c2 = make_checkpoint(tmp_path / "out" / "checkpoint-2", 2)
    p.on_save(c1, 1).result()
    p.on_save(c2, 2)
    p.wait()
    files = hub.files(f"{USER}/run")
    last = {k[len(CHECKPOINT_PATH) + 1:]: v for k, v in files.items() if k.startswith(CHECKPOINT_PATH + "/")}
    assert last == folder_bytes(c2)  # step 1's extra file was deleted from checkpoints/last
    assert files["model.safetensors"] == (c2 / "model.safetensors").read_bytes()
    assert "optimizer.bin" not in files and "random_states_0.pkl" not in files  # state only under checkpoints/
    assert not (tmp_path / "out" / STAGING_DIR).exists() or not any((tmp_path / "out" / STAGING_DIR).iterdir())

    cache = tmp_path / "resume"
    got = resolve_hub_resume("hub", cache, p.config)
    assert folder_bytes(got) == folder_bytes(c2)
    (got / "stale.bin").write_bytes(b"left by an older download")
    again = resolve_hub_resume(f"hf://{USER}/run", cache)
    assert again == got and folder_bytes(again) == folder_bytes(c2)
    reloaded = AutoModel.from_pretrained(got)
    assert torch.equal(reloaded.embeddings.word_embeddings.weight,
                       AutoModel.from_pretrained(c2).embeddings.word_embeddings.weight)


def test_every_save_pushes_the_model_only_and_end_strategy_pushes_nothing_on_save(hub, tmp_path):
    ckpt = make_checkpoint(tmp_path / "out" / "checkpoint-5", 5)
    p = pusher(tmp_path, strategy="every_save")
    p.start()
    p.on_save(ckpt, 5)
    p.wait()
    files = hub.files(f"{USER}/run")
    assert files["model.safetensors"] == (ckpt / "model.safetensors").read_bytes()
    assert not any(k.startswith("checkpoints/") or k == "optimizer.bin" for k in files)

    end = HubPusher(HubConfig(push=True, model_id=f"{USER}/quiet"), tmp_path / "out", backoff=0.01)
    end.start()
    assert end.on_save(ckpt, 5) is None
    assert sorted(hub.files(f"{USER}/quiet")) == [".gitattributes"]


def test_queued_checkpoint_is_superseded_and_pushes_a_snapshot(hub, tmp_path):
    p = pusher(tmp_path, strategy="checkpoint")
    p.start()
    release = hub.hold("commit")
    c1 = make_checkpoint(tmp_path / "out" / "checkpoint-1", 1)
    pushed_c1 = folder_bytes(c1)
    first = p.on_save(c1, 1)
    deadline = time.monotonic() + 20
    while not hub.requests_to("/commit/") and time.monotonic() < deadline:  # step 1 is in flight
        time.sleep(0.01)
    (c1 / "optimizer.bin").write_bytes(b"overwritten while the upload runs")
    second = p.on_save(make_checkpoint(tmp_path / "out" / "checkpoint-2", 2), 2)
    third = p.on_save(make_checkpoint(tmp_path / "out" / "checkpoint-3", 3), 3)
    assert second.cancelled() and not first.cancelled()
    release.set()
    summary = p.wait()
    assert summary.superseded == 1 and len(summary.pushed) == 2 and third.done()
    history = hub.repo(f"{USER}/run").history()
    assert [c.message for c in history[:2]] == ["Training in progress, step 3", "Training in progress, step 1"]
    step1 = history[1].files
    assert step1[f"{CHECKPOINT_PATH}/optimizer.bin"] == pushed_c1["optimizer.bin"]
    assert not any((tmp_path / "out" / STAGING_DIR).iterdir())


def test_revision_goes_to_a_branch(hub, tmp_path):
    p = pusher(tmp_path, revision="dev")
    out = tmp_path / "out"
    tiny_bert().save_pretrained(out)
    p.start()
    p.on_end(out)
    p.wait()
    assert "model.safetensors" in hub.files(f"{USER}/run", "dev")
    assert sorted(hub.files(f"{USER}/run", "main")) == [".gitattributes"]


# ---------------------------------------------------------------------- failures
def test_two_server_errors_then_success_is_a_complete_push(hub, tmp_path):
    out = tmp_path / "out"
    tiny_bert().save_pretrained(out)
    p = pusher(tmp_path)
    p.start()
    hub.fail_next(1, status=500, routes=("preupload",))
    hub.fail_next(1, status=500, routes=("commit",))
    p.on_end(out)
    p.wait()
    assert [r.status for r in hub.requests_to("/preupload/")] == [500, 200]
    assert [r.status for r in hub.requests_to("/commit/")] == [500, 200]
    files = hub.files(f"{USER}/run")
    for name, content in folder_bytes(out).items():
        assert files[name] == content


def test_our_retries_cover_requests_the_client_does_not_retry(hub, tmp_path):
    p = pusher(tmp_path)
    hub.fail_next(1, status=503, routes=("create",))
    hub.fail_next(1, status=None, routes=("create",))  # a dropped connection
    assert p.start() == f"{USER}/run"
    assert [r.status for r in hub.requests_to("/api/repos/create")] == [503, None, 200]

    hub.fail_next(10, status=500, routes=("create",))
    with pytest.raises(HubError, match=r"500 Internal Server Error .*gave up after 4 attempts"):
        pusher(tmp_path, model_id=f"{USER}/other").start()
    assert len(hub.requests_to("/api/repos/create")) == 3 + 4


def test_unauthorized_is_one_clear_error_and_local_files_are_intact(hub, tmp_path):
    out = tmp_path / "out"
    tiny_bert().save_pretrained(out)
    before = digests(out)
    hub.require_token("hf_someoneelse")
    with pytest.raises(HubError) as err:
        pusher(tmp_path).start()
    message = str(err.value)
    assert "\n" not in message and TOKEN not in message
    assert f"401 Unauthorized for repo {USER}/run at {hub.url}" in message
    assert "check HF_TOKEN or `hf auth login`" in message
    assert len(hub.requests_to("/api/repos/create")) == 1  # not retried

    hub.require_token(None)
    p = pusher(tmp_path, strategy="checkpoint")
    p.start()
    hub.require_token("hf_revoked")  # the token stops working mid-run
    p.on_save(make_checkpoint(out / "checkpoint-1", 1), 1)
    p.on_end(out)
    with pytest.raises(HubError, match=r"401 Unauthorized .*\(2 of 2 pushes failed\)"):
        p.wait()
    after = digests(out)
    assert {k: after[k] for k in before} == before  # pushing changes nothing local
    assert set(after) - set(before) == {"checkpoint-1/config.json", "checkpoint-1/model.safetensors",
                                        "checkpoint-1/optimizer.bin", "checkpoint-1/random_states_0.pkl"}
    assert (out / "checkpoint-1" / "optimizer.bin").read_bytes() == b"optimizer state 1"
    assert sorted(hub.files(f"{USER}/run")) == [".gitattributes"]


def test_token_never_leaks_into_logs_files_or_other_requests(hub, tmp_path, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    for name in ("huggingface_hub", "nlp_ssl", "transformers"):
        caplog.set_level(logging.DEBUG, logger=name)
    config = HubConfig(push=True, model_id=f"{USER}/run", strategy="checkpoint")  # token: HF_TOKEN
    out = tmp_path / "out"
    tiny_bert().save_pretrained(out)
    p = HubPusher(config, out, retries=1, backoff=0.01)
    p.start()
    hub.fail_next(1, status=500, routes=("create",))
    p.on_save(make_checkpoint(out / "checkpoint-1", 1), 1)
    p.on_end(out)
    p.wait()
    hub.require_token("hf_other")
    p.on_end(out)
    with pytest.raises(HubError) as err:
        p.wait()
    hub.require_token(None)
    assert (resolve_hub_resume(f"hf://{USER}/run", tmp_path / "cache") / "optimizer.bin").is_file()

    captured = capfd.readouterr()
    assert TOKEN not in caplog.text + captured.out + captured.err + str(err.value)
    assert "401" in str(err.value)
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path
    assert all(TOKEN.encode() not in content for content in hub.files(f"{USER}/run").values())
    assert any(r.headers.get("authorization") == f"Bearer {TOKEN}" for r in hub.requests)
    for r in hub.requests:
        others = {k: v for k, v in r.headers.items() if k != "authorization"}
        assert TOKEN not in r.path and TOKEN not in str(others) and TOKEN.encode() not in r.body

    # a file that would publish the token is refused, not uploaded
    (out / "run_config.yaml").write_text(f"hub_token: {TOKEN}\n")
    p.on_end(out)
    with pytest.raises(HubError, match="run_config.yaml: it contains the Hub token") as refused:
        p.wait()
    assert TOKEN not in str(refused.value)
    assert "run_config.yaml" not in hub.files(f"{USER}/run")


# ---------------------------------------------------------------------- configuration and resume edge cases
def test_disabled_pusher_and_bad_config(hub, tmp_path, monkeypatch):
    off = HubPusher(HubConfig(), tmp_path / "out")
    assert off.start() is None and off.on_end(tmp_path) is None and off.wait().pushed == []
    assert hub.requests == []
    with pytest.raises(ConfigError, match="hub.model_id 'a/b/c' is not a valid repo id"):
        HubPusher(HubConfig(push=True, model_id="a/b/c"), tmp_path)
    with pytest.raises(ConfigError, match="hub.strategy 'often'"):
        HubPusher(HubConfig(push=True, strategy="often"), tmp_path)
    default_name = HubPusher(HubConfig(push=True), tmp_path / "my-run", backoff=0.01)
    assert default_name.start() == f"{USER}/my-run"
    with pytest.raises(HubError, match="no Hugging Face token found: set HF_TOKEN"):
        monkeypatch.delenv("HF_TOKEN")
        pusher(tmp_path).start()
    assert len(hub.requests_to("/api/repos/create")) == 1


def test_resume_specs(hub, tmp_path, monkeypatch):
    from huggingface_hub import constants

    assert resolve_hub_resume(None, tmp_path) is None
    assert resolve_hub_resume("auto", tmp_path) is None
    assert resolve_hub_resume(str(tmp_path), tmp_path) is None
    with pytest.raises(ConfigError, match="resume=hub needs hub.model_id"):
        resolve_hub_resume("hub", tmp_path, HubConfig())
    with pytest.raises(ConfigError, match="model repo"):
        resolve_hub_resume(f"hf://datasets/{USER}/d", tmp_path)
    with pytest.raises(HubCheckpointMissing, match=f"repo {USER}/nothing not found"):
        resolve_hub_resume(f"hf://{USER}/nothing", tmp_path)
    hub.create_repo(f"{USER}/fresh")
    with pytest.raises(HubCheckpointMissing, match=f"has no {CHECKPOINT_PATH}/"):
        resolve_hub_resume("hub", tmp_path, HubConfig(model_id="fresh"))  # namespace from whoami
    with pytest.raises(HubCheckpointMissing, match=f"has no {CHECKPOINT_PATH}/"):
        resolve_hub_resume(f"hf://{USER}/fresh", tmp_path)

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(HubError, match="HF_HUB_OFFLINE=1 is set"):
        pusher(tmp_path).start()
    with pytest.raises(HubError, match="HF_HUB_OFFLINE=1 is set"):
        resolve_hub_resume(f"hf://{USER}/fresh", tmp_path)
