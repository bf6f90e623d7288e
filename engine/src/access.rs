//! Callers, roles and the permission check (the README's "Callers and permissions").
//!
//! The check order keeps existence from leaking: a caller that holds the needed permission in
//! no scope gets PermissionDenied before anything is looked up ([`Caller::reach`]); a caller that
//! holds it only in other organizations than the target's gets the same NotFound as for a
//! missing target ([`Reach::covers`], checked by whoever knows the target's organization).

use crate::error::{Error, ErrorId};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    UserRead,
    UserWrite,
    UserDelete,
    /// Create organizations (instance only).
    OrgCreate,
    /// Assign administrator roles.
    AdminManage,
    /// Read lockout policies (`policy.read`).
    PolicyRead,
    /// Set and reset an organization's lockout policy (`policy.write`, `policy.delete`).
    PolicyWrite,
    /// The instance's default lockout policy (`iam.policy.write`; instance only).
    InstancePolicyWrite,
    /// Sessions (`session.read`, `session.write`, `session.delete`).
    SessionRead,
    SessionWrite,
    SessionDelete,
    /// Read the whole store for a backup (instance only; IAM_OWNER).
    Backup,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    IamOwner,
    OrgOwner,
    OrgUserManager,
    OrgUserViewer,
    /// The login's own machine user: sessions and what a login reads (instance).
    IamLoginClient,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::IamOwner,
        Role::OrgOwner,
        Role::OrgUserManager,
        Role::OrgUserViewer,
        Role::IamLoginClient,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Role::IamOwner => "IAM_OWNER",
            Role::OrgOwner => "ORG_OWNER",
            Role::OrgUserManager => "ORG_USER_MANAGER",
            Role::OrgUserViewer => "ORG_USER_VIEWER",
            Role::IamLoginClient => "IAM_LOGIN_CLIENT",
        }
    }

    pub fn parse(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.name() == name)
    }

    /// IAM_OWNER and IAM_LOGIN_CLIENT apply to the instance; the others to one organization.
    pub fn is_instance_role(self) -> bool {
        matches!(self, Role::IamOwner | Role::IamLoginClient)
    }

    pub fn grants(self, permission: Permission) -> bool {
        use Permission::*;
        // As ZITADEL maps them (its `InternalAuthZ.RolePermissionMappings`), for what Latchkey has.
        match self {
            Role::IamOwner => true,
            Role::OrgOwner => matches!(
                permission,
                UserRead
                    | UserWrite
                    | UserDelete
                    | AdminManage
                    | PolicyRead
                    | PolicyWrite
                    | SessionRead
                    | SessionDelete
            ),
            Role::OrgUserManager => matches!(
                permission,
                UserRead | UserWrite | PolicyRead | SessionRead | SessionDelete
            ),
            Role::OrgUserViewer => matches!(permission, UserRead | PolicyRead),
            Role::IamLoginClient => matches!(
                permission,
                UserRead | PolicyRead | SessionRead | SessionWrite | SessionDelete
            ),
        }
    }
}

/// A role on a scope: the instance (`org_id: None`) or one organization.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Grant {
    pub role: Role,
    pub org_id: Option<String>,
}

/// Who is calling: an authenticated machine user with its grants.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user_id: String,
    /// The caller's own organization (the default target of AddHumanUser).
    pub org_id: String,
    pub grants: Vec<Grant>,
}

/// Where a caller may exercise one permission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reach {
    Instance,
    Orgs(Vec<String>),
}

impl Reach {
    pub fn covers(&self, org_id: &str) -> bool {
        match self {
            Reach::Instance => true,
            Reach::Orgs(orgs) => orgs.iter().any(|o| o == org_id),
        }
    }
}

impl Caller {
    /// An all-powerful caller for code that embeds the engine and does its own authorization.
    pub fn system(org_id: impl Into<String>) -> Caller {
        Caller {
            user_id: "system".into(),
            org_id: org_id.into(),
            grants: vec![Grant {
                role: Role::IamOwner,
                org_id: None,
            }],
        }
    }

    /// Where the caller holds `permission`; PermissionDenied when nowhere.
    pub fn reach(&self, permission: Permission) -> Result<Reach, Error> {
        let mut orgs = Vec::new();
        for grant in self.grants.iter().filter(|g| g.role.grants(permission)) {
            match &grant.org_id {
                None => return Ok(Reach::Instance),
                Some(org) => {
                    if !orgs.contains(org) {
                        orgs.push(org.clone())
                    }
                }
            }
        }
        if orgs.is_empty() {
            Err(ErrorId::PermissionDenied.into())
        } else {
            Ok(Reach::Orgs(orgs))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(grants: &[(Role, Option<&str>)]) -> Caller {
        Caller {
            user_id: "c".into(),
            org_id: "a".into(),
            grants: grants
                .iter()
                .map(|(role, org)| Grant {
                    role: *role,
                    org_id: org.map(str::to_owned),
                })
                .collect(),
        }
    }

    #[test]
    fn viewer_cannot_write_anywhere() {
        let viewer = caller(&[(Role::OrgUserViewer, Some("a"))]);
        assert_eq!(
            viewer.reach(Permission::UserWrite).unwrap_err().id,
            ErrorId::PermissionDenied
        );
        assert!(viewer.reach(Permission::UserRead).unwrap().covers("a"));
    }

    #[test]
    fn org_roles_reach_only_their_orgs() {
        let manager = caller(&[
            (Role::OrgUserManager, Some("a")),
            (Role::OrgUserViewer, Some("b")),
        ]);
        let write = manager.reach(Permission::UserWrite).unwrap();
        assert!(write.covers("a") && !write.covers("b"));
        let read = manager.reach(Permission::UserRead).unwrap();
        assert!(read.covers("a") && read.covers("b"));
        assert!(manager.reach(Permission::UserDelete).is_err());
    }

    #[test]
    fn iam_owner_reaches_everything() {
        let owner = caller(&[(Role::IamOwner, None)]);
        for p in [
            Permission::UserRead,
            Permission::UserWrite,
            Permission::UserDelete,
            Permission::OrgCreate,
            Permission::AdminManage,
            Permission::SessionWrite,
            Permission::InstancePolicyWrite,
            Permission::Backup,
        ] {
            assert_eq!(owner.reach(p).unwrap(), Reach::Instance);
        }
    }

    #[test]
    fn the_login_client_holds_sessions_on_the_instance_and_nothing_to_change_users() {
        let login = caller(&[(Role::IamLoginClient, None)]);
        for p in [
            Permission::SessionRead,
            Permission::SessionWrite,
            Permission::SessionDelete,
            Permission::PolicyRead,
            Permission::UserRead,
        ] {
            assert_eq!(login.reach(p).unwrap(), Reach::Instance, "{p:?}");
        }
        for p in [
            Permission::UserWrite,
            Permission::PolicyWrite,
            Permission::AdminManage,
        ] {
            assert!(login.reach(p).is_err(), "{p:?}");
        }
        // Only the instance administrator writes sessions among the organization roles' holders.
        let owner = caller(&[(Role::OrgOwner, Some("a"))]);
        assert!(owner.reach(Permission::SessionWrite).is_err());
        assert!(owner.reach(Permission::SessionRead).unwrap().covers("a"));
    }

    #[test]
    fn only_the_instance_owner_takes_backups() {
        for role in [
            Role::OrgOwner,
            Role::OrgUserManager,
            Role::OrgUserViewer,
            Role::IamLoginClient,
        ] {
            let holder = caller(&[(role, Some("a")), (role, None)]);
            assert!(holder.reach(Permission::Backup).is_err(), "{role:?}");
        }
    }
}
