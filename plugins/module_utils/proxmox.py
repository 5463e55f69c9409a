# Shared Proxmox VE API client for our modules: auth options, API calls with readable errors, task waiting.
# The property-string codec is proxmox_propstr.py; the LXC container-config model proxmox_lxc_config.py.
# Kept import-light on purpose: a module invocation must stay well under 1.5 s of its own time.

from __future__ import annotations

import re
import time

from ansible.module_utils.basic import env_fallback

try:
    from proxmoxer import ProxmoxAPI
    from proxmoxer.core import AuthenticationError, ResourceException

    HAS_PROXMOXER = True
    PROXMOXER_IMPORT_ERROR = None
except ImportError as exc:  # reported by the module through missing_required_lib
    HAS_PROXMOXER = False
    PROXMOXER_IMPORT_ERROR = str(exc)

try:
    from requests.exceptions import ConnectionError as RequestsConnectionError
    from requests.exceptions import ConnectTimeout, SSLError, Timeout
except ImportError:  # requests comes with proxmoxer's https backend; without it nothing connects anyway
    RequestsConnectionError = SSLError = Timeout = OSError
    ConnectTimeout = None


def proxmox_auth_argument_spec():
    """The connection options every Proxmox module takes (documented by the proxmox_auth fragment)."""
    return dict(
        api_host=dict(type="str", required=True, fallback=(env_fallback, ["PROXMOX_HOST"])),
        api_port=dict(type="int", default=8006, fallback=(env_fallback, ["PROXMOX_PORT"])),
        api_user=dict(type="str", fallback=(env_fallback, ["PROXMOX_USER"])),
        api_password=dict(type="str", no_log=True, fallback=(env_fallback, ["PROXMOX_PASSWORD"])),
        api_token_id=dict(type="str", no_log=False, fallback=(env_fallback, ["PROXMOX_TOKEN_ID"])),
        api_token_secret=dict(type="str", no_log=True, fallback=(env_fallback, ["PROXMOX_TOKEN_SECRET"])),
        validate_certs=dict(type="bool", default=True, fallback=(env_fallback, ["PROXMOX_VALIDATE_CERTS"])),
        ca_path=dict(type="path", fallback=(env_fallback, ["PROXMOX_CA_PATH"])),
        # PROXMOX_API_TIMEOUT is community.proxmox's name; PROXMOX_TIMEOUT, ours before, stays an alias.
        api_timeout=dict(
            type="int", default=10, fallback=(env_fallback, ["PROXMOX_API_TIMEOUT", "PROXMOX_TIMEOUT"])
        ),
    )


PROXMOX_AUTH_REQUIRED_TOGETHER = [("api_token_id", "api_token_secret")]
PROXMOX_AUTH_MUTUALLY_EXCLUSIVE = [("api_password", "api_token_secret")]
PROXMOX_AUTH_REQUIRED_ONE_OF = [("api_password", "api_token_secret")]


# --------------------------------------------------------------------------------------------------
# Errors


class ProxmoxError(Exception):
    """An error worth showing to the user as is. `param` names the module option it concerns."""

    def __init__(self, msg, param=None, status=None, errors=None):
        super().__init__(msg)
        self.msg = msg
        self.param = param
        self.status = status
        self.errors = errors or {}


class ApiError(ProxmoxError):
    """The API answered an HTTP error; `errors` is PVE's per-parameter error dict when it sent one."""


class TaskFailed(ProxmoxError):
    """A Proxmox task stopped with an exit status other than OK (or ran out of time)."""

    def __init__(self, msg, upid, exitstatus, log_lines, waited=None):
        super().__init__(msg)
        self.upid = upid
        self.exitstatus = exitstatus
        self.log_lines = log_lines
        self.waited = waited  # seconds from the first poll until the failure was noticed


class _Unreachable(Exception):
    def __init__(self, msg, retryable):
        super().__init__(msg)
        self.msg = msg
        self.retryable = retryable


def _name_unknown(exc):
    """A host name that does not resolve will not start resolving in a few seconds: fail at once."""
    text = repr(exc)
    return "Failed to resolve" in text or "Name or service not known" in text


def _not_sent(exc):
    """True when the request cannot have reached the server (refused, unreachable, connect timeout)."""
    if isinstance(exc, SSLError):
        return False
    if ConnectTimeout is not None and isinstance(exc, ConnectTimeout):
        return True
    text = repr(exc)
    return "NewConnectionError" in text or "Connection refused" in text


def _api_error(exc, what):
    errors = exc.errors if isinstance(exc.errors, dict) else {}
    detail = "; ".join(f"{k}: {str(v).strip()}" for k, v in sorted(errors.items()))
    if not detail:
        detail = str(exc.content or exc.status_message or "").strip()
    msg = f"{what}: API answered HTTP {exc.status_code} {exc.status_message or ''}".rstrip()
    if detail:
        msg += f": {detail}"
    node = re.search(r"/nodes/([^/]+)", what)
    if exc.status_code == 595 and node:
        # pveproxy's answer when it cannot forward the call to the node that owns the path.
        msg += f" (node {node.group(1)} is offline or unreachable from the node serving the API)"
    return ApiError(msg, status=exc.status_code, errors=errors)


# --------------------------------------------------------------------------------------------------
# Client


class ProxmoxClient:
    """proxmoxer's https backend behind paths, readable errors and task waiting.

    `wait_seconds` accumulates time spent waiting on Proxmox (tasks, DHCP) so the bench can subtract it.
    """

    # Polling starts fast and backs off: a failed task is noticed well within 2 s of it stopping.
    POLL_FIRST = 0.1
    POLL_MAX = 0.5
    LOG_TAIL = 8
    RETRY_PAUSE = 0.5

    def __init__(self, params):
        self.wait_seconds = 0.0
        self.retry_window = params.get("api_timeout") or 10
        self.api = self._connect(params)

    @staticmethod
    def _connect(params):
        if not HAS_PROXMOXER:
            raise ProxmoxError(
                f"proxmoxer and requests are required where the module runs: {PROXMOXER_IMPORT_ERROR};"
                " run it on the controller (delegate_to: localhost) with"
                " ansible_python_interpreter: '{{ ansible_playbook_python }}'"
            )
        user = params.get("api_user")
        token_id = params.get("api_token_id")
        kwargs = dict(
            port=params.get("api_port") or 8006,
            timeout=params.get("api_timeout") or 10,
            verify_ssl=(params.get("ca_path") or True) if params.get("validate_certs", True) else False,
        )
        if token_id:
            # Accept the full "user@realm!name" as well as the bare token name with api_user.
            if "!" in token_id:
                token_user, token_id = token_id.split("!", 1)
                if user and user != token_user:
                    raise ProxmoxError(
                        f"api_token_id belongs to {token_user!r}, not api_user {user!r}", param="api_token_id"
                    )
                user = token_user
            kwargs.update(token_name=token_id, token_value=params.get("api_token_secret"))
        else:
            kwargs.update(password=params.get("api_password"))
        if not user:
            raise ProxmoxError(
                "api_user is required (or a full api_token_id user@realm!name)", param="api_user"
            )
        host = params["api_host"]
        deadline = time.monotonic() + kwargs["timeout"]
        while True:
            try:
                return ProxmoxAPI(host, user=user, **kwargs)
            except (RequestsConnectionError, Timeout) as exc:
                # A refused ticket request never reached the server: wait out an API restart.
                if not _not_sent(exc) or _name_unknown(exc) or time.monotonic() >= deadline:
                    raise ProxmoxClient._connect_error(exc, host, user, kwargs) from None
                time.sleep(ProxmoxClient.RETRY_PAUSE)
            except AuthenticationError as exc:
                raise ProxmoxClient._connect_error(exc, host, user, kwargs) from None

    @staticmethod
    def _connect_error(exc, host, user, kwargs):
        if isinstance(exc, AuthenticationError):
            return ProxmoxError(
                f"api_user/api_password: authentication failed for {user!r} at {host}: {exc}",
                param="api_password",
                status=401,
            )
        if isinstance(exc, SSLError):
            return ProxmoxError(
                f"ca_path/validate_certs: TLS verification of {host} failed: {exc}", param="ca_path"
            )
        return ProxmoxError(f"api_host: cannot reach {host}:{kwargs['port']}: {exc}", param="api_host")

    # -- raw calls ----------------------------------------------------------------------------------
    def call(self, method, path, **params):
        """One API call; `path` is relative to /api2/json. Raises ApiError/ProxmoxError, never proxmoxer's.

        While the API restarts (pveproxy reloads, for one) connections are refused for a moment: such a
        call is tried again for up to api_timeout seconds. Reads are retried after any connection
        failure; writes only when the request cannot have reached the server.
        """
        deadline = time.monotonic() + self.retry_window
        while True:
            try:
                return self._call_once(method, path, params)
            except _Unreachable as exc:
                if time.monotonic() >= deadline or not exc.retryable:
                    raise ProxmoxError(exc.msg, param="api_host") from None
                self.wait_seconds += self.RETRY_PAUSE
                time.sleep(self.RETRY_PAUSE)

    def _call_once(self, method, path, params):
        resource = self.api(path.strip("/"))
        what = f"{method} /{path.strip('/')}"
        try:
            if method == "GET":
                return resource.get(**params)
            if method == "POST":
                return resource.post(**params)
            if method == "PUT":
                return resource.put(**params)
            if method == "DELETE":
                return resource.delete(**params)
        except ResourceException as exc:
            if exc.status_code == 401:
                raise ProxmoxError(
                    f"api_token_id/api_token_secret: authentication failed ({what}: HTTP 401 {exc.content})",
                    param="api_token_secret",
                    status=401,
                ) from None
            raise _api_error(exc, what) from None
        except SSLError as exc:
            raise ProxmoxError(
                f"ca_path/validate_certs: TLS verification failed: {exc}", param="ca_path"
            ) from None
        except (RequestsConnectionError, Timeout) as exc:
            retryable = not _name_unknown(exc) and (method == "GET" or _not_sent(exc))
            raise _Unreachable(f"api_host: {what} failed: {exc}", retryable) from None
        raise ValueError(f"unsupported method {method}")

    def get(self, path, **params):
        return self.call("GET", path, **params)

    # -- tasks --------------------------------------------------------------------------------------
    @staticmethod
    def upid_node(upid):
        parts = str(upid).split(":")
        if len(parts) < 8 or parts[0] != "UPID":
            raise ProxmoxError(f"the API returned {upid!r} where a task UPID was expected")
        return parts[1]

    def task_log_tail(self, node, upid, lines=LOG_TAIL):
        try:
            log = self.get(f"nodes/{node}/tasks/{upid}/log", start=0, limit=5000) or []
        except ProxmoxError:
            return []
        texts = [str(item.get("t", "")) for item in log if isinstance(item, dict)]
        texts = [t for t in texts if t.strip() and t.strip() != "no content"]
        return texts[-lines:]

    def wait_task(self, upid, timeout, what="task"):
        """Poll the task until it stops; raise TaskFailed at once when its exit status is not OK.

        Returns the list of WARNINGS lines (empty when the task ended plainly OK).
        """
        node = self.upid_node(upid)
        started = time.monotonic()
        delay = self.POLL_FIRST
        try:
            while True:
                try:
                    status = self.get(f"nodes/{node}/tasks/{upid}/status")
                except ProxmoxError as exc:
                    if exc.param != "api_host" or time.monotonic() - started > timeout:
                        raise
                    # A busy node can miss one status read; the task runs on regardless, so ask again.
                    status = {"status": "running"}
                if status.get("status") == "stopped":
                    exitstatus = str(status.get("exitstatus") or "")
                    if exitstatus == "OK":
                        return []
                    tail = self.task_log_tail(node, upid)
                    if exitstatus.startswith("WARNINGS"):
                        return [f"{what}: {exitstatus}"] + [line for line in tail if "warn" in line.lower()]
                    raise TaskFailed(
                        f"{what} failed: {exitstatus}" + (f" (task log: {' | '.join(tail)})" if tail else ""),
                        upid,
                        exitstatus,
                        tail,
                        waited=round(time.monotonic() - started, 3),
                    )
                if time.monotonic() - started > timeout:
                    tail = self.task_log_tail(node, upid)
                    raise TaskFailed(
                        f"{what} still running after {timeout}s (timeout); task {upid}"
                        + (f" (task log: {' | '.join(tail)})" if tail else ""),
                        upid,
                        "timeout",
                        tail,
                        waited=round(time.monotonic() - started, 3),
                    )
                time.sleep(delay)
                delay = min(delay * 1.5, self.POLL_MAX)
        finally:
            self.wait_seconds += time.monotonic() - started
