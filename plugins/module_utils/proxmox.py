# Shared Proxmox VE client for our modules: auth options, API calls with readable errors, task waiting,
# and PVE property strings (net[n], rootfs, features, startup, tags).
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
        api_timeout=dict(type="int", default=10, fallback=(env_fallback, ["PROXMOX_TIMEOUT"])),
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


# --------------------------------------------------------------------------------------------------
# Property strings: "name=eth0,bridge=vmbr0,ip=dhcp", "local:9100/vm-9100-disk-0.raw,size=8G",
# "nesting=1,keyctl=1", "order=1,up=30".  PVE splits on commas; a value may be double-quoted
# when it holds a comma. A part without "=" is the value of the format's default key.

_TRUE = {"1", "on", "yes", "true"}
_FALSE = {"0", "off", "no", "false"}


def _split_parts(text):
    parts, buf, quoted = [], [], False
    for ch in text:
        if ch == '"':
            quoted = not quoted
            buf.append(ch)
        elif ch == "," and not quoted:
            parts.append("".join(buf))
            buf = []
        else:
            buf.append(ch)
    if quoted:
        raise ValueError(f"unterminated quote in {text!r}")
    parts.append("".join(buf))
    return [p.strip() for p in parts if p.strip()]


def _unquote(value):
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1].replace('\\"', '"')
    return value


def parse_propstr(text, default_key=None):
    """Parse a PVE property string into an ordered dict of str values."""
    out = {}
    if text is None:
        return out
    for part in _split_parts(str(text)):
        key, sep, value = part.partition("=")
        if not sep:
            if default_key is None:
                raise ValueError(f"{part!r} in {text!r} has no key and this format has no default key")
            key, value = default_key, part
        key = key.strip()
        if key in out:
            raise ValueError(f"duplicate key {key!r} in {text!r}")
        out[key] = _unquote(value.strip())
    return out


def _render_value(value):
    if isinstance(value, bool):
        return "1" if value else "0"
    text = str(value)
    if "," in text or '"' in text:
        return '"' + text.replace('"', '\\"') + '"'
    return text


def render_propstr(values, default_key=None, order=()):
    """Render a dict as a PVE property string: default key first (bare), then `order`, then the rest sorted.

    None values are left out; booleans become 1/0.
    """
    items = {k: v for k, v in values.items() if v is not None}
    parts = []
    if default_key is not None and default_key in items:
        parts.append(_render_value(items.pop(default_key)))
    for key in list(order) + sorted(k for k in items if k not in order):
        if key in items:
            parts.append(f"{key}={_render_value(items[key])}")
    return ",".join(parts)


def parse_bool(value):
    """PVE booleans come as 1/0, on/off, yes/no, true/false (and as JSON ints)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"{value!r} is not a boolean")


_SIZE_UNITS = {"": 1.0, "K": 1 / (1024 * 1024), "M": 1 / 1024, "G": 1.0, "T": 1024.0}


def parse_size_gib(value):
    """'8G', '8', '512M', '1T' → size in GiB (int when whole, else float rounded to 3 places)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)B?\s*", str(value), re.IGNORECASE)
    if not match:
        raise ValueError(f"{value!r} is not a disk size")
    gib = float(match.group(1)) * _SIZE_UNITS[match.group(2).upper()]
    return int(gib) if gib == int(gib) else round(gib, 3)


def parse_tags(value):
    """PVE tag lists take ';', ',' and spaces as separators and are stored sorted → sorted unique list."""
    if value is None:
        return []
    items = [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]
    tags = set()
    for item in items:
        tags.update(t for t in re.split(r"[;,\s]+", item) if t)
    return sorted(tags)


def render_tags(tags):
    return ";".join(parse_tags(tags))


def parse_list(value):
    """Space/comma separated lists (nameserver, searchdomain) → list, order kept, duplicates dropped."""
    if value is None:
        return []
    items = value if isinstance(value, (list, tuple)) else [value]
    out = []
    for item in items:
        for part in re.split(r"[,\s]+", str(item)):
            if part and part not in out:
                out.append(part)
    return out


# --------------------------------------------------------------------------------------------------
# Diff


def diff_keys(before, after):
    """Keys of `after` whose value differs from `before` (missing in before counts as different)."""
    return [k for k in after if before.get(k) != after[k]]


def sub_dict(values, keys):
    return {k: values.get(k) for k in keys}


# --------------------------------------------------------------------------------------------------
# LXC property strings in their structured (module option) form

# Our option name -> PVE net[n] sub-key (only `vlan` is renamed: PVE calls it `tag`).
NETIF_KEYS = {
    "name": "name",
    "bridge": "bridge",
    "hwaddr": "hwaddr",
    "ip": "ip",
    "gw": "gw",
    "ip6": "ip6",
    "gw6": "gw6",
    "vlan": "tag",
    "firewall": "firewall",
    "mtu": "mtu",
    "rate": "rate",
}
_NETIF_API_ORDER = ("name", "bridge", "hwaddr", "ip", "gw", "ip6", "gw6", "tag", "firewall", "mtu", "rate")
# Sub-keys PVE keeps that our options do not manage; carried over untouched on update.
NETIF_UNMANAGED = ("type", "trunks", "link_down", "host-managed")
LXC_FEATURES = ("force_rw_sys", "fuse", "keyctl", "mknod", "nesting")


def _number(value):
    number = float(value)
    return int(number) if number == int(number) else number


def parse_netif(text):
    """'name=eth0,bridge=vmbr0,hwaddr=..,ip=dhcp,type=veth' → {'name': 'eth0', 'bridge': 'vmbr0', ...}.

    Booleans that are off and the default type=veth are dropped so equal configs compare equal.
    Unmanaged sub-keys are returned under '_extra'.
    """
    raw = parse_propstr(text)
    out, extra = {}, {}
    api_to_opt = {v: k for k, v in NETIF_KEYS.items()}
    for key, value in raw.items():
        if key in api_to_opt:
            opt = api_to_opt[key]
            if opt == "firewall":
                if parse_bool(value):
                    out[opt] = True
            elif opt in ("vlan", "mtu"):
                out[opt] = int(value)
            elif opt == "rate":
                out[opt] = _number(value)
            elif opt == "hwaddr":
                out[opt] = value.upper()
            else:
                out[opt] = value
        elif key == "type" and value == "veth":
            continue
        else:
            extra[key] = value
    if extra:
        out["_extra"] = extra
    return out


def render_netif(netif):
    """Structured netif (with optional '_extra') → PVE net[n] property string."""
    values = {}
    for opt, key in NETIF_KEYS.items():
        value = netif.get(opt)
        if value is None or (opt == "firewall" and not value):
            continue
        values[key] = value
    values.update(netif.get("_extra") or {})
    return render_propstr(values, order=_NETIF_API_ORDER)


def parse_rootfs(text):
    """'local:9100/vm-9100-disk-0.raw,size=8G' (or 'local-lvm:8') → {'storage', 'size_gb', 'volume'}."""
    raw = parse_propstr(text, default_key="volume")
    volume = raw.get("volume", "")
    storage, _, rest = volume.partition(":")
    out = {"storage": storage or None, "volume": volume}
    if raw.get("size"):
        out["size_gb"] = parse_size_gib(raw["size"])
    elif re.fullmatch(r"\d+(\.\d+)?", rest or ""):
        out["size_gb"] = _number(rest)  # STORAGE:SIZE_IN_GiB allocation syntax
    return out


def render_rootfs_new(storage, size_gb):
    """The allocation syntax PVE takes on create: a new volume of size_gb GiB on storage."""
    return f"{storage}:{size_gb}"


def parse_features(text):
    """'nesting=1,keyctl=1,mount=nfs;cifs' → ['keyctl', 'mount=cifs;nfs', 'nesting'] (enabled, sorted)."""
    out = []
    for key, value in parse_propstr(text).items():
        if key == "mount":
            fstypes = sorted(t for t in re.split(r"[;\s]+", value) if t)
            if fstypes:
                out.append("mount=" + ";".join(fstypes))
        elif parse_bool(value):
            out.append(key)
    return sorted(out)


def normalise_features(items):
    """Module option form (list of names, 'mount=a;b') → the same sorted form parse_features gives."""
    return parse_features(",".join(item if "=" in item else f"{item}=1" for item in items or []))


def render_features(items):
    values = {}
    for item in normalise_features(items):
        key, _, value = item.partition("=")
        values[key] = value if key == "mount" else True
    return render_propstr(values)


def parse_startup(text):
    """'order=1,up=30,down=60' (or a bare '1') → {'order': 1, 'up': 30, 'down': 60}."""
    return {k: int(v) for k, v in parse_propstr(text, default_key="order").items()}


def render_startup(values):
    return render_propstr(
        {k: v for k, v in (values or {}).items() if v is not None}, order=("order", "up", "down")
    )
