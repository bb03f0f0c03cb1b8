"""`mlfe`: serve, deploy and roll out scoring services from the command line.

    mlfe serve [--port 8080] [--state-dir DIR]
    mlfe serve --backend kubernetes [--kubeconfig FILE] [--namespace NS]
    mlfe deploy -n diabetes --ic inferenceconfig.json --dc deploymentconfig.json -m model:1:./model
    mlfe service list|show|keys|regen-key|get-access-token|logs|update|delete ...
    mlfe endpoint create-version|update-version|delete-version ...
    mlfe run-local --entry-script score.py [--model-dir DIR] [--port 5001]

Everything but `serve` and `run-local` is a thin client of the management API
(/api/v1/manage): it reads the configuration files a user already has for Azure ML,
makes their paths absolute (the local backend runs replicas on this machine), sends them,
and shows the answer as text or, with `--json`, as the API's own JSON. Commands that
change replicas wait for the service to settle, printing progress to stderr the way
Azure's `wait_for_deployment(show_output=True)` does, and exit 0 only when it is Healthy.

The package, one idea per module: `parser` (the grammar), `entry` (run one command, map
failures to exit codes), `commands` (management API commands), `local` (`serve`,
`run-local`), `client` (the API and its admin key), `deployment` (request bodies from the
user's files), `settle` (waiting and progress), `output` (text and JSON), `errors`.
"""

from router.cli.client import ManageClient, resolve_admin_key
from router.cli.entry import main
from router.cli.errors import ApiError, CliError, UsageError
from router.cli.parser import build_parser
from router.cli.settle import HEALTHY, Progress, report_outcome, wait_until_settled

__all__ = [
    "HEALTHY",
    "ApiError",
    "CliError",
    "ManageClient",
    "Progress",
    "UsageError",
    "build_parser",
    "main",
    "report_outcome",
    "resolve_admin_key",
    "wait_until_settled",
]
