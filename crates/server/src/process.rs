//! Whom Poplar runs as: the `[process]` section, the privilege drop and the data folder
//! ownership check.
//!
//! `poplar serve` binds its listening sockets first (ports 110 and 995 need root or
//! `CAP_NET_BIND_SERVICE`), then, while the process still has a single thread, gives up
//! root for good: supplementary groups become the target group alone, then the real,
//! effective and saved group IDs, then the user IDs, in that order (once the user ID is
//! gone, so is the right to change groups). The drop is then checked: every ID is the
//! target's, and `setuid(0)`, `setgid(0)` and `setgroups` fail. Everything after it —
//! the SQLite directory, the key ring, the self-signed certificate, Maildirs, reading
//! the configuration and certificates again on SIGHUP — runs as the target user, so what Poplar creates belongs to it.
//!
//! Poplar does not switch users per session. It serves the usual virtual-mailbox setup,
//! where one mail user owns every Maildir, as Postfix virtual delivery makes them.

use std::fs;
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _};
use std::path::Path;

use anyhow::{Context as _, bail};
use nix::unistd::{
    Gid, Group, Uid, User, getegid, geteuid, getgroups, getresgid, getresuid, setgid, setgroups,
    setresgid, setresuid, setuid,
};
use serde::{Deserialize, Serialize};

/// The `[process]` section: the user and group `poplar serve` switches to after binding.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Process {
    /// User (name or numeric ID) to run as once the sockets are bound. Empty: keep the
    /// user Poplar was started as.
    pub user: String,
    /// Group (name or numeric ID), the only group kept. Empty: the user's primary group.
    pub group: String,
}

impl Process {
    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<(), String> {
        if self.user.is_empty() && !self.group.is_empty() {
            return Err("process.group is set but process.user is not; set both".into());
        }
        Ok(())
    }
}

/// A user and group to run as, looked up in the system's user database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The name as configured, for messages.
    pub user: String,
    /// User ID.
    pub uid: Uid,
    /// Group ID.
    pub gid: Gid,
}

impl Identity {
    /// The identity `[process]` names, or `None` when it leaves the user unchanged.
    /// Looked up before the drop, while the user database is surely readable.
    pub fn resolve(process: &Process) -> anyhow::Result<Option<Self>> {
        if process.user.is_empty() {
            return Ok(None);
        }
        let name = process.user.as_str();
        let (uid, primary_gid) = match User::from_name(name).context("looking up process.user")? {
            Some(u) => (u.uid, Some(u.gid)),
            None => {
                let Ok(id) = name.parse::<u32>() else {
                    bail!("process.user: there is no user {name:?} on this system");
                };
                let uid = Uid::from_raw(id);
                let user = User::from_uid(uid).context("looking up process.user")?;
                (uid, user.map(|u| u.gid))
            }
        };
        let gid = if process.group.is_empty() {
            match primary_gid {
                Some(gid) => gid,
                None => bail!("process.user {name:?} has no passwd entry; set process.group too"),
            }
        } else {
            let group = process.group.as_str();
            match Group::from_name(group).context("looking up process.group")? {
                Some(g) => g.gid,
                None => match group.parse::<u32>() {
                    Ok(id) => Gid::from_raw(id),
                    Err(_) => bail!("process.group: there is no group {group:?} on this system"),
                },
            }
        };
        Ok(Some(Self {
            user: name.to_string(),
            uid,
            gid,
        }))
    }

    /// Switches the process to this identity for good, or checks that it already runs as
    /// it (started by systemd with `User=`, or by `runuser`). Call it before any thread
    /// is started: the IDs then hold for every thread made afterwards.
    pub fn switch_to(&self) -> anyhow::Result<()> {
        let uids = getresuid().context("getresuid")?;
        let gids = getresgid().context("getresgid")?;
        let same_user = [uids.real, uids.effective, uids.saved]
            .iter()
            .all(|u| *u == self.uid);
        let same_group = [gids.real, gids.effective, gids.saved]
            .iter()
            .all(|g| *g == self.gid);
        if same_user && same_group {
            return Ok(());
        }
        if !uids.effective.is_root() {
            bail!(
                "process.user is {} ({}:{}), but poplar was started as uid {} and is not root: \
                 start it as root (it drops to that user after binding) or as that user",
                self.user,
                self.uid,
                self.gid,
                uids.effective
            );
        }
        // Groups first: setgroups and setresgid need the privileges setresuid gives up.
        setgroups(&[self.gid]).context("setgroups")?;
        setresgid(self.gid, self.gid, self.gid).context("setresgid")?;
        setresuid(self.uid, self.uid, self.uid).context("setresuid")?;
        self.verify()
            .context("the privilege drop did not hold; refusing to run")?;
        tracing::info!(user = %self.user, uid = %self.uid, gid = %self.gid, "switched to [process] user");
        Ok(())
    }

    /// Every ID is the target's, and no way back to root is left open.
    fn verify(&self) -> anyhow::Result<()> {
        let uids = getresuid().context("getresuid")?;
        let gids = getresgid().context("getresgid")?;
        if [uids.real, uids.effective, uids.saved] != [self.uid; 3] {
            bail!("user IDs are {uids:?} after switching to {}", self.uid);
        }
        if [gids.real, gids.effective, gids.saved] != [self.gid; 3] {
            bail!("group IDs are {gids:?} after switching to {}", self.gid);
        }
        let groups = getgroups().context("getgroups")?;
        if groups.iter().any(|g| *g != self.gid) {
            bail!(
                "supplementary groups are {groups:?} after switching to {}",
                self.gid
            );
        }
        if self.uid.is_root() {
            // process.user = "root": nothing was given up, so nothing can be regained.
            return Ok(());
        }
        let root_user = setuid(Uid::from_raw(0)).is_ok();
        let root_group = self.gid.as_raw() != 0 && setgid(Gid::from_raw(0)).is_ok();
        let extra_groups = setgroups(&[Gid::from_raw(0)]).is_ok();
        if root_user || root_group || extra_groups {
            bail!("root privileges could be regained after the drop");
        }
        Ok(())
    }
}

/// A warning when the process runs as root and `[process]` keeps it so: then every
/// session is served by root.
pub fn root_warning(process: &Process) -> Option<String> {
    if !geteuid().is_root() {
        return None;
    }
    if process.user.is_empty() {
        return Some(
            "running as root with no process.user: set [process] user (the mail user that owns \
             the Maildirs) so that clients are not served by root"
                .into(),
        );
    }
    if matches!(process.user.as_str(), "root" | "0") {
        return Some("process.user is root: the server keeps every privilege".into());
    }
    None
}

/// Makes the data folder if it is missing (mode 0750: it holds password hashes and
/// keys), then checks that it, what Poplar keeps directly in it and in its `secrets/`
/// and `tls/` folders belong to the user the process runs as. A data folder of another
/// user would half work: reads succeed, and the first write (a new SCRAM key, the
/// WAL, a certificate) fails later, or leaves files that the next start cannot open.
pub fn prepare_data_dir(dir: &Path) -> anyhow::Result<()> {
    if fs::metadata(dir).is_err() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o750)
            .create(dir)
            .with_context(|| {
                format!(
                    "creating data folder {} as uid {}; create it owned by that user \
                     (install -d -o USER -g GROUP -m 0750 {})",
                    dir.display(),
                    geteuid(),
                    dir.display()
                )
            })?;
    }
    let me = geteuid();
    let meta = fs::metadata(dir).with_context(|| format!("reading {}", dir.display()))?;
    if meta.uid() != me.as_raw() {
        bail!(
            "data folder {} is owned by {}, but poplar runs as {}; give it to that user \
             (chown -R {} {}) or set [process] user to its owner",
            dir.display(),
            describe_uid(meta.uid()),
            describe_uid(me.as_raw()),
            owner_spec(),
            dir.display()
        );
    }
    for folder in [dir.to_path_buf(), dir.join("secrets"), dir.join("tls")] {
        let Ok(entries) = fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries {
            let entry = entry.with_context(|| format!("listing {}", folder.display()))?;
            let meta = entry
                .metadata()
                .with_context(|| format!("reading {}", entry.path().display()))?;
            // A symlink's own owner grants nothing; what it points to is checked on use.
            if meta.file_type().is_symlink() || meta.uid() == me.as_raw() {
                continue;
            }
            bail!(
                "{} in the data folder is owned by {}, but poplar runs as {}; give the data \
                 folder to that user (chown -R {} {})",
                entry.path().display(),
                describe_uid(meta.uid()),
                describe_uid(me.as_raw()),
                owner_spec(),
                dir.display()
            );
        }
    }
    Ok(())
}

/// `user:group` of the process, as `chown` takes it.
fn owner_spec() -> String {
    let uid = geteuid();
    let gid = getegid();
    let user = user_name(uid.as_raw()).unwrap_or_else(|| uid.to_string());
    let group = Group::from_gid(gid)
        .ok()
        .flatten()
        .map_or_else(|| gid.to_string(), |g| g.name);
    format!("{user}:{group}")
}

fn user_name(uid: u32) -> Option<String> {
    User::from_uid(Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
}

fn describe_uid(uid: u32) -> String {
    match user_name(uid) {
        Some(name) => format!("{name} (uid {uid})"),
        None => format!("uid {uid}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Config;

    #[test]
    fn the_section_parses_and_defaults_to_no_change() {
        let c = Config::default();
        assert_eq!(c.process, Process::default());
        assert_eq!(Identity::resolve(&c.process).unwrap(), None);
        let c: Config = toml::from_str("[process]\nuser = \"vmail\"\ngroup = \"mail\"\n").unwrap();
        c.validate().unwrap();
        assert_eq!(c.process.user, "vmail");
        assert_eq!(c.process.group, "mail");
        let c: Config = toml::from_str("[process]\nuser = \"vmail\"\n").unwrap();
        c.validate().unwrap();
        assert_eq!(c.process.group, "");
    }

    #[test]
    fn a_group_alone_and_unknown_keys_are_refused() {
        let c: Config = toml::from_str("[process]\ngroup = \"mail\"\n").unwrap();
        assert!(c.validate().is_err());
        assert!(toml::from_str::<Config>("[process]\nuid = 5000\n").is_err());
        assert!(toml::from_str::<Config>("[process]\nuser = 5000\n").is_err());
    }

    #[test]
    fn resolves_names_and_numbers() {
        // root exists everywhere with uid 0 and primary group 0.
        let by_name = Process {
            user: "root".into(),
            group: String::new(),
        };
        let root = Identity::resolve(&by_name).unwrap().unwrap();
        assert_eq!((root.uid.as_raw(), root.gid.as_raw()), (0, 0));
        let by_number = Process {
            user: "0".into(),
            group: "0".into(),
        };
        let root = Identity::resolve(&by_number).unwrap().unwrap();
        assert_eq!((root.uid.as_raw(), root.gid.as_raw()), (0, 0));
        // A numeric ID without a passwd entry needs an explicit group.
        let unnamed = Process {
            user: "4000000001".into(),
            group: String::new(),
        };
        assert!(Identity::resolve(&unnamed).is_err());
        let unnamed = Process {
            user: "4000000001".into(),
            group: "4000000001".into(),
        };
        let id = Identity::resolve(&unnamed).unwrap().unwrap();
        assert_eq!(id.uid.as_raw(), 4_000_000_001);
        let missing = Process {
            user: "no-such-user-poplar".into(),
            group: String::new(),
        };
        let err = Identity::resolve(&missing).unwrap_err().to_string();
        assert!(err.contains("no-such-user-poplar"), "{err}");
    }

    #[test]
    fn switching_to_the_current_identity_changes_nothing() {
        let me = Identity {
            user: "me".into(),
            uid: getresuid().unwrap().effective,
            gid: getresgid().unwrap().effective,
        };
        let uids = getresuid().unwrap();
        let gids = getresgid().unwrap();
        let all_same =
            [uids.real, uids.saved] == [me.uid; 2] && [gids.real, gids.saved] == [me.gid; 2];
        if all_same {
            me.switch_to().unwrap();
            assert_eq!(getresuid().unwrap(), uids);
        }
    }

    #[test]
    fn the_data_folder_is_made_private_and_checked() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/data");
        prepare_data_dir(&dir).unwrap();
        let mode = fs::metadata(&dir).unwrap().mode();
        assert_eq!(mode & 0o777, 0o750);
        fs::create_dir(dir.join("secrets")).unwrap();
        fs::write(dir.join("secrets/server.key"), "x").unwrap();
        std::os::unix::fs::symlink("/", dir.join("mail")).unwrap();
        prepare_data_dir(&dir).unwrap();
        if geteuid().is_root() {
            // Root can give files away, which is how another owner comes about.
            let key = dir.join("secrets/server.key");
            std::os::unix::fs::chown(&key, Some(4_000_000_002), None).unwrap();
            let err = prepare_data_dir(&dir).unwrap_err().to_string();
            assert!(
                err.contains("server.key") && err.contains("4000000002"),
                "{err}"
            );
            std::os::unix::fs::chown(&key, Some(0), None).unwrap();
            std::os::unix::fs::chown(&dir, Some(4_000_000_002), None).unwrap();
            let err = prepare_data_dir(&dir).unwrap_err().to_string();
            assert!(
                err.contains("data folder") && err.contains("owned by uid 4000000002"),
                "{err}"
            );
        }
    }
}
