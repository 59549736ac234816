"""The .gitlab-ci.yml subset parser: normalised job definitions and GitLab's error wording."""

from __future__ import annotations

import re

import pytest

from pytest_runnerconf.local.ciyaml import CIConfigError, parse_config, parse_duration, parse_pipeline
from pytest_runnerconf.local.model import ArtifactsDef, ServiceDef, Variable

PROBES = """
stages: [build, test]
variables:
  GLOBAL: "1"
  DESCRIBED: {value: two, description: shown in the run form}
  NUMBER: 5
default:
  image: alpine:3.20
  tags: [local]
  before_script: [echo default-before]
.base: &base
  variables: {FROM_BASE: base, OVERRIDDEN: base}
  services:
    - name: redis:7
      alias: cache
      command: ["redis-server", "--port", "6380"]
      variables: {HEALTHCHECK_TCP_PORT: "6380"}
    - postgres:16
build:
  extends: .base
  stage: build
  variables: {OVERRIDDEN: job}
  script:
    - echo build
    - [echo nested-1, [echo nested-2]]
  artifacts: {paths: [out/, report.txt], when: always, name: probe, expire_in: 1 day}
  timeout: 1h 30m
probe:
  <<: *base
  image: {name: busybox:1.36, entrypoint: [""]}
  script: echo probe
  after_script: echo after
  allow_failure: true
  tags: [local, docker]
"""


def test_jobs_are_normalised_with_extends_defaults_and_anchors() -> None:
    build, probe = parse_pipeline(PROBES)
    assert (build.name, build.stage, build.stage_idx) == ("build", "build", 1)
    assert build.script == ("echo build", "echo nested-1", "echo nested-2")
    assert build.before_script == ("echo default-before",)
    assert build.image == "alpine:3.20" and build.image_entrypoint is None
    assert build.tags == ("local",)
    # extends deep-merges the variables mapping: base keys survive, the job's value wins
    assert build.variables == (Variable("FROM_BASE", "base"), Variable("OVERRIDDEN", "job"))
    assert build.global_variables == (
        Variable("GLOBAL", "1"),
        Variable("DESCRIBED", "two"),
        Variable("NUMBER", "5"),
    )
    assert build.services == (
        ServiceDef(
            name="redis:7",
            alias="cache",
            command=("redis-server", "--port", "6380"),
            variables=(Variable("HEALTHCHECK_TCP_PORT", "6380"),),
        ),
        ServiceDef(name="postgres:16"),
    )
    assert build.artifacts == ArtifactsDef(paths=("out/", "report.txt"), when="always", name="probe")
    assert build.artifacts_expire_in == "1 day"
    assert build.timeout_s == 5400
    assert not build.allow_failure

    assert (probe.stage, probe.stage_idx) == ("test", 2)  # default stage
    assert probe.image == "busybox:1.36" and probe.image_entrypoint == ("",)
    assert probe.after_script == ("echo after",)
    assert probe.allow_failure
    assert probe.tags == ("local", "docker")
    assert probe.timeout_s is None and probe.artifacts is None
    assert probe.variables == (Variable("FROM_BASE", "base"), Variable("OVERRIDDEN", "base"))


def test_default_block_beats_deprecated_globals_and_jobs_beat_both() -> None:
    text = """
image: old:1
before_script: [echo global]
default:
  image: new:2
a:
  script: x
b:
  image: own:3
  before_script: []
  script: x
"""
    a, b = parse_pipeline(text)
    assert (a.image, a.before_script) == ("new:2", ("echo global",))
    assert (b.image, b.before_script) == ("own:3", ())


def test_stage_order_follows_stages_with_pre_and_post_at_the_edges() -> None:
    text = """
stages: [.post, deploy, .pre, build]
last: {stage: .post, script: x}
first: {stage: .pre, script: x}
ship: {stage: deploy, script: x}
make: {stage: build, script: x}
"""
    config = parse_config(text)
    assert config.stages == (".pre", "deploy", "build", ".post")
    assert [j.name for j in config.jobs] == ["first", "ship", "make", "last"]
    assert [j.stage_idx for j in config.jobs] == [0, 1, 2, 3]


def test_extends_chain_and_list_merge_in_order() -> None:
    text = """
.one: {variables: {A: one, B: one}, tags: [t1]}
.two: {extends: .one, variables: {B: two, C: two}}
.three: {tags: [t3], timeout: 10 minutes}
job:
  extends: [.two, .three]
  script: x
  variables: {C: job}
"""
    (job,) = parse_pipeline(text)
    assert job.variables == (Variable("A", "one"), Variable("B", "two"), Variable("C", "job"))
    assert job.tags == ("t3",)  # arrays are replaced, not merged
    assert job.timeout_s == 600


def test_reference_tags_and_when() -> None:
    text = """
.setup:
  script: [echo a, echo b]
job:
  script:
    - !reference [.setup, script]
    - echo c
cleanup:
  when: always
  script: echo cleanup
skipped:
  when: never
  script: echo never
"""
    job, cleanup = parse_pipeline(text)
    assert job.script == ("echo a", "echo b", "echo c")
    assert cleanup.when == "always"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("600", 600),
        (600, 600),
        ("10 minutes", 600),
        ("1h 30m", 5400),
        ("1h30m", 5400),
        ("2 hours 5 min", 7500),
        ("3d", 259200),
        ("1 week", 604800),
        ("45s", 45),
        ("soon", None),
        ("10 parsecs", None),
        ("", None),
        (True, None),
    ],
)
def test_parse_duration(text: object, seconds: int | None) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "# probe pipeline\n\nstages: [build]\n build: {script: x}\n",
            "(<unknown>): did not find expected key while parsing a block mapping at line 3 column 1",
        ),
        (
            "a: [1, 2\n",
            "(<unknown>): did not find expected ',' or ']' while parsing a flow sequence at line 1 column 4",
        ),
        ("a: b: c\n", "(<unknown>): mapping values are not allowed in this context at line 1 column 5"),
        ("", "Please provide content of .gitlab-ci.yml"),
        ("- just\n- a list\n", "Invalid configuration format"),
        (
            "build:\n  stage: test\n",
            "jobs:build config should implement the script:, run:, or trigger: keyword",
        ),
        ("build: echo\n", "jobs:build config should implement the script:, run:, or trigger: keyword"),
        (
            "x:\n  script: a\n  artifacts: {when: sometimes}\n",
            "jobs:x:artifacts:when config should be one of: on_success, on_failure, always",
        ),
        (
            "x:\n  stage: lint\n  script: a\n",
            "x job: chosen stage does not exist; available stages are .pre, build, test, deploy, .post",
        ),
        (
            "stages: [one, two]\nx:\n  stage: build\n  script: a\n",
            "x job: chosen stage does not exist; available stages are .pre, one, two, .post",
        ),
        ("stages: build\nx: {script: a}\n", "stages config should be an array of strings"),
        (".hidden:\n  script: a\n", "jobs config should contain at least one visible job"),
        (
            "variables: [A, B]\nx: {script: a}\n",
            "variables config should be a hash of key value pairs, value can be a hash",
        ),
        ("x:\n  extends: .nope\n  script: a\n", "x: unknown keys in `extends` (.nope)"),
        ("x:\n  extends: y\n  script: a\ny:\n  extends: x\n", "x: circular dependency detected in `extends`"),
        ("x:\n  script: a\n  timeout: soon\n", "jobs:x:timeout config should be a duration"),
        ("x:\n  script: a\n  foo: 1\n", "jobs:x config contains unknown keys: foo"),
        (
            "x:\n  script: {a: 1}\n",
            "jobs:x:script config should be a string or a nested array of strings up to 10 levels deep",
        ),
        ("x:\n  script: a\n  tags: gpu\n", "jobs:x:tags config should be an array of strings"),
        ("x:\n  script: a\n  image: [a]\n", "jobs:x:image config should be a hash or a string"),
        (
            "x:\n  script: a\n  allow_failure: maybe\n",
            "jobs:x:allow_failure config should be a hash or a boolean value",
        ),
        (
            "x:\n  script: a\n  artifacts: {paths: out}\n",
            "jobs:x:artifacts:paths config should be an array of strings",
        ),
    ],
)
def test_malformed_config_has_gitlabs_message(text: str, message: str) -> None:
    with pytest.raises(CIConfigError) as caught:
        parse_pipeline(text)
    assert str(caught.value) == message


@pytest.mark.parametrize("keyword", ["rules", "parallel", "trigger"])
def test_unemulated_keywords_are_refused_not_ignored(keyword: str) -> None:
    with pytest.raises(CIConfigError, match=keyword):
        parse_pipeline(f"x:\n  script: a\n  {keyword}: []\n")


def test_kubernetes_user_of_image_and_services() -> None:
    (job,) = parse_pipeline(
        "j:\n  image: {name: alpine, kubernetes: {user: 1000}}\n"
        "  services: [{name: busybox, alias: s, kubernetes: {user: '4000:4001'}}]\n  script: [x]\n"
    )
    assert job.image_user == "1000"
    assert job.services[0].user == "4000:4001"
    with pytest.raises(CIConfigError, match="kubernetes config contains unknown keys"):
        parse_pipeline("j:\n  image: {name: alpine, kubernetes: {uid: 1}}\n  script: [x]\n")


def test_needs_lists_the_jobs_waited_for_and_their_artifacts() -> None:
    jobs = {
        j.name: j
        for j in parse_pipeline(
            "save: {script: a}\n"
            "other: {script: a}\n"
            "restore: {script: a, needs: [save, {job: other, artifacts: false}]}\n"
            "alone: {script: a, needs: []}\n"
        )
    }
    assert jobs["save"].needs is None  # stage order
    assert jobs["alone"].needs == ()  # starts at once
    assert [(n.job, n.artifacts) for n in jobs["restore"].needs or ()] == [("save", True), ("other", False)]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "a: {script: x, needs: [ghost]}\n",
            "'a' job needs 'ghost' job, but 'ghost' does not exist in the pipeline.",
        ),
        (
            "a: {script: x, needs: [b]}\nb: {script: x, needs: [a]}\n",
            "circular dependency detected in `needs`",
        ),
        ("a: {script: x, needs: save}\n", "jobs:a:needs config can only be a hash or an array"),
        ("a: {script: x, needs: [{job: b, artifacts: 1}]}\nb: {script: x}\n", "need:artifacts"),
        (
            "stages: [one, two]\na: {stage: one, script: x, needs: [b]}\nb: {stage: two, script: x}\n",
            "a job: need b is not defined in current or prior stages",
        ),
    ],
)
def test_bad_needs_are_refused_with_gitlabs_wording(text: str, message: str) -> None:
    with pytest.raises(CIConfigError, match=re.escape(message)):
        parse_pipeline(text)


def test_cache_of_a_job_of_default_and_of_the_deprecated_global() -> None:
    jobs = {
        j.name: j
        for j in parse_pipeline(
            "default:\n  cache: {key: dflt, paths: [d/]}\n"
            "own: {script: a, cache: [{key: k1, paths: [a/], policy: pull}, {paths: [b/], when: always}]}\n"
            "inherits: {script: a}\n"
        )
    }
    assert [(c.key, c.paths, c.policy, c.when) for c in jobs["own"].cache] == [
        ("k1", ("a/",), "pull", "on_success"),
        ("default", ("b/",), "pull-push", "always"),  # GitLab's key when none is given
    ]
    assert [(c.key, c.paths) for c in jobs["inherits"].cache] == [("dflt", ("d/",))]
    (job,) = parse_pipeline("cache: {key: g, paths: [g/]}\nj: {script: a}\n")
    assert [(c.key, c.paths) for c in job.cache] == [("g", ("g/",))]
    with pytest.raises(
        CIConfigError, match="jobs:j:cache:policy config should be one of: pull-push, pull, push"
    ):
        parse_pipeline("j: {script: a, cache: {paths: [x], policy: sometimes}}\n")
