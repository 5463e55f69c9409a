"""PVE's privileges and built-in roles, as pve-access-control builds them.

Source: pve-access-control src/PVE/AccessControl.pm, `$privgroups` and `create_roles()`: each category's
privileges are split into root / admin / user / audit; `PVE<Cat>Admin` and `PVEAdmin` get admin+user+audit,
`PVE<Cat>User` gets user+audit (only for categories that have user privileges), `PVEAuditor` gets every
audit privilege, `PVETemplateUser` is VM.Clone + VM.Audit, `Administrator` holds every valid privilege and
`NoAccess` none. Root-only privileges (Sys.Modify, Sys.PowerMgmt, Sys.Incoming, Realm.Allocate) are in no
role but Administrator. PVEAdmin lacks Mapping.Modify (removed explicitly in create_roles).
"""

from __future__ import annotations

# category -> (root, admin, user, audit)
PRIVGROUPS: dict[str, tuple[tuple[str, ...], ...]] = {
    "VM": (
        (),
        (
            "VM.Config.Disk",
            "VM.Config.CPU",
            "VM.Config.Memory",
            "VM.Config.Network",
            "VM.Config.HWType",
            "VM.Config.Options",
            "VM.Allocate",
            "VM.Clone",
            "VM.Migrate",
            "VM.Monitor",
            "VM.Snapshot",
            "VM.Snapshot.Rollback",
        ),
        ("VM.Config.CDROM", "VM.Config.Cloudinit", "VM.Console", "VM.Backup", "VM.PowerMgmt"),
        ("VM.Audit",),
    ),
    "Sys": (
        ("Sys.PowerMgmt", "Sys.Modify", "Sys.Incoming"),
        ("Sys.Console", "Sys.Syslog"),
        (),
        ("Sys.Audit",),
    ),
    "Datastore": (
        (),
        ("Datastore.Allocate", "Datastore.AllocateTemplate"),
        ("Datastore.AllocateSpace",),
        ("Datastore.Audit",),
    ),
    "SDN": ((), ("SDN.Allocate", "SDN.Audit"), ("SDN.Use",), ("SDN.Audit",)),
    "User": (("Realm.Allocate",), ("User.Modify", "Group.Allocate", "Realm.AllocateUser"), (), ()),
    "Pool": ((), ("Pool.Allocate",), ("Pool.Audit",), ("Pool.Audit",)),
    "Mapping": ((), ("Mapping.Modify",), ("Mapping.Use",), ("Mapping.Audit",)),
}

# Permissions.Modify belongs to no category (AccessControl.pm: `$valid_privs`).
VALID_PRIVS: frozenset[str] = frozenset(
    {"Permissions.Modify"} | {p for groups in PRIVGROUPS.values() for group in groups for p in group}
)


def _builtin_roles() -> dict[str, frozenset[str]]:
    roles: dict[str, set[str]] = {"NoAccess": set(), "PVEAdmin": set(), "PVEAuditor": set()}
    for cat, (_root, admin, user, audit) in PRIVGROUPS.items():
        roles.setdefault(f"PVE{cat}Admin", set()).update(admin, user, audit)
        roles["PVEAdmin"].update(admin, user, audit)
        if user:
            roles.setdefault(f"PVE{cat}User", set()).update(user, audit)
        roles["PVEAuditor"].update(audit)
    roles["PVEAdmin"].discard("Mapping.Modify")
    roles["PVETemplateUser"] = {"VM.Clone", "VM.Audit"}
    roles["Administrator"] = set(VALID_PRIVS)
    return {name: frozenset(privs) for name, privs in roles.items()}


BUILTIN_ROLES: dict[str, frozenset[str]] = _builtin_roles()
