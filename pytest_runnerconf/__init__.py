"""pytest-runnerconf: proves what a GitLab Runner Kubernetes-executor cluster really does.

The public check API (what the bundled suite and a team's own checks are written against):

- ``check``: declare a test as a conformance check (stable ID, claim, remediation, area, probes);
- ``fail``, ``expect_equal``, ``expect_true``: a conformance failure with expected vs observed; ``held``
  records an expectation that held (expected, observed and a short summary), so a pass says what it saw;
- ``could_not_test(cause, sentence)``: the evidence a check needs could not be obtained (``CAUSES``);
  ``job_end(job)`` says how a job ended (``JobEnd``: succeeded, script-failure, infrastructure, ...);
- ``RunEvidence``, ``JobEvidence``, ``PodObservation``: what the run observed; ``pod_name_prefix``,
  ``same_runner_token`` and ``POD_NAME_IN_TEXT`` tell which runner and job slot a pod name belongs to;
- ``Profile``, ``Expectations``, ``Limits``, ``DnsExpect``: the cluster under test and what its runner
  promises (``LabelsExpect``, ``SchedulingExpect``, ``SecurityExpect``, ``ImagePolicyExpect``: what its pod spec
  promises); ``quantity_value`` reads a Kubernetes quantity, ``api_time`` a GitLab or Kubernetes timestamp;
- fixtures ``runnerconf_evidence``, ``runnerconf_profile``, ``job_evidence``, ``probe_record``;
- ``require_behaviour(key, job)`` skips a check when the runner that ran JOB predates a behaviour of the
  version table (``versions.TABLE``); ``has_behaviour(key, job)`` says which side of a changed one it is on;
- marker ``runnerconf_probe(*names)`` for probe jobs a test needs besides its ``@check`` probes.
"""

from __future__ import annotations

from pytest_runnerconf.checks import CheckInfo, check, expect_equal, expect_true, fail, held
from pytest_runnerconf.evidence import JobEvidence, PodObservation, RunEvidence
from pytest_runnerconf.expect_pod import ImagePolicyExpect, LabelsExpect, SchedulingExpect, SecurityExpect
from pytest_runnerconf.jobend import JobEnd
from pytest_runnerconf.jobend import classify as job_end
from pytest_runnerconf.outcome import CAUSES, CouldNotTest, could_not_test
from pytest_runnerconf.podjob import POD_NAME_IN_TEXT
from pytest_runnerconf.podjob import name_prefix as pod_name_prefix
from pytest_runnerconf.podjob import same_token as same_runner_token
from pytest_runnerconf.profile import DnsExpect, Expectations, Limits, Profile, quantity_value
from pytest_runnerconf.rfc3339 import epoch as api_time
from pytest_runnerconf.versions import has_behaviour, require_behaviour

__version__ = "0.2.0"

__all__ = [
    "CAUSES",
    "POD_NAME_IN_TEXT",
    "CheckInfo",
    "CouldNotTest",
    "DnsExpect",
    "Expectations",
    "ImagePolicyExpect",
    "JobEnd",
    "JobEvidence",
    "LabelsExpect",
    "Limits",
    "PodObservation",
    "Profile",
    "RunEvidence",
    "SchedulingExpect",
    "SecurityExpect",
    "__version__",
    "api_time",
    "check",
    "could_not_test",
    "expect_equal",
    "expect_true",
    "fail",
    "has_behaviour",
    "held",
    "job_end",
    "pod_name_prefix",
    "quantity_value",
    "require_behaviour",
    "same_runner_token",
]
