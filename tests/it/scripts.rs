//! `scripts/test`, the README's test command, as a newcomer meets it. Each
//! test runs a copy of the script and its tool list with a PATH of its own:
//! bash and dirname, plus shims for `id`, `sudo`, `apt-get`, `cargo` and the
//! tools, which record every call. So the script's own logic decides, on a
//! machine that lacks the tools, or the right to install them, or apt.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tempfile::TempDir;

use crate::support::{on_path, text};

const SCRIPT: &str = include_str!("../../scripts/test");
const TOOLS: &str = include_str!("../../scripts/test-tools.txt");

/// `(tool, package)` for each Debian package the list names.
fn apt_tools() -> Vec<(&'static str, &'static str)> {
    tools_from("apt")
}

/// `(tool, package)` for each Python package (installed into .venv/).
fn venv_tools() -> Vec<(&'static str, &'static str)> {
    tools_from("venv")
}

fn tools_from(source: &str) -> Vec<(&'static str, &'static str)> {
    TOOLS
        .lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .filter(|fields| fields.len() >= 3 && fields[1] == source && !fields[0].starts_with('#'))
        .map(|fields| (fields[0], fields[2]))
        .collect()
}

/// A checkout of the script in a temporary directory, and the only PATH it
/// sees.
struct Sandbox {
    dir: TempDir,
    bin: PathBuf,
}

impl Sandbox {
    /// A sandbox where `id -u` answers `uid` and cargo succeeds.
    fn new(uid: u32) -> Sandbox {
        let dir = tempfile::tempdir().unwrap();
        let scripts = dir.path().join("repo/scripts");
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&scripts).unwrap();
        std::fs::create_dir_all(&bin).unwrap();
        write_executable(&scripts.join("test"), SCRIPT);
        std::fs::write(scripts.join("test-tools.txt"), TOOLS).unwrap();
        for program in ["bash", "dirname"] {
            let real = on_path(program).unwrap_or_else(|| panic!("{program} not on PATH"));
            std::os::unix::fs::symlink(real, bin.join(program)).unwrap();
        }
        let sandbox = Sandbox { dir, bin };
        sandbox.shim("id", &format!("echo {uid}"));
        sandbox.shim("cargo", "");
        sandbox
    }

    /// A program on the sandbox's PATH that records `name ARGS` and then runs
    /// `body`.
    fn shim(&self, name: &str, body: &str) {
        let calls = self.dir.path().join("calls");
        let bash = self.bin.join("bash");
        write_executable(
            &self.bin.join(name),
            &format!(
                "#!{}\nCALLS='{}'\necho \"{name} $*\" >>\"$CALLS\"\n{body}\n",
                bash.display(),
                calls.display()
            ),
        );
    }

    /// The tools of the list, as if installed.
    fn install_tools(&self) {
        for (tool, _) in apt_tools() {
            self.shim(tool, "");
        }
        self.install_venv_tools();
    }

    /// The Python tools, as if installed into the checkout's .venv/.
    fn install_venv_tools(&self) {
        let venv = self.dir.path().join("repo/.venv/bin");
        std::fs::create_dir_all(&venv).unwrap();
        for (tool, _) in venv_tools() {
            write_executable(&venv.join(tool), "#!/bin/false\n");
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(self.dir.path().join("repo/scripts/test"))
            .args(args)
            .env_clear()
            .env("PATH", &self.bin)
            .output()
            .expect("run scripts/test")
    }

    /// Every call the shims recorded, in order.
    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("calls"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

fn write_executable(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// The refusal: exit 1, one message on stderr naming every package, nothing
/// installed, no test run.
fn assert_refused(sandbox: &Sandbox, out: &Output, reason: &str, install_line: &str) {
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stdout.is_empty(), "printed {stdout:?}");
    let first = stderr.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("scripts/test: cannot install what the tests need: ")
            && first.contains(reason)
            && first.ends_with("No test was run."),
        "{stderr}"
    );
    // The last line is what to install.
    let command = stderr
        .lines()
        .last()
        .and_then(|l| l.trim().strip_prefix(install_line))
        .unwrap_or_else(|| panic!("the last line is not `{install_line}…`:\n{stderr}"));
    let named: Vec<&str> = command.split_whitespace().collect();
    for (tool, package) in apt_tools() {
        assert!(named.contains(&package), "{package} not named:\n{stderr}");
        assert!(
            stderr.contains(&format!("{package} (")),
            "no reason for {package} ({tool}):\n{stderr}"
        );
    }
    let calls = sandbox.calls();
    assert!(
        calls
            .iter()
            .all(|c| !c.starts_with("cargo") && !c.starts_with("apt-get")),
        "it ran {calls:?}"
    );
    assert!(
        calls
            .iter()
            .all(|c| !c.starts_with("sudo") || c == "sudo -n true"),
        "sudo beyond asking: {calls:?}"
    );
}

#[test]
fn without_the_right_to_install_it_names_the_packages_and_runs_no_test() {
    let sandbox = Sandbox::new(1000);
    sandbox.shim("sudo", "exit 1"); // asks for a password
    sandbox.shim("apt-get", "");
    let out = sandbox.run(&[]);
    assert_refused(
        &sandbox,
        &out,
        "not root, and no sudo without a password",
        "sudo apt-get install ",
    );
}

#[test]
fn without_apt_it_names_the_packages_and_runs_no_test() {
    let sandbox = Sandbox::new(0);
    let out = sandbox.run(&[]);
    assert_refused(&sandbox, &out, "this machine has no apt-get", "");
}

#[test]
fn it_installs_what_is_missing_as_root_or_through_sudo_then_runs_the_suite() {
    let packages: Vec<&str> = apt_tools().iter().map(|(_, p)| *p).collect();
    let chmod = on_path("chmod").expect("chmod on PATH");
    for with_sudo in [false, true] {
        let sandbox = Sandbox::new(if with_sudo { 1000 } else { 0 });
        // This one is about Debian packages (the Python ones have theirs).
        sandbox.install_venv_tools();
        if with_sudo {
            // Without a password: runs the command after its VAR=value words.
            sandbox.shim(
                "sudo",
                r#"[ "$1" = -n ] && exit 0
while [[ $1 == *=* ]]; do export "$1"; shift; done
exec "$@""#,
            );
        }
        // apt-get records its frontend and "installs" a package by putting
        // its tool on PATH.
        let mut apt = String::from(
            r#"echo "DEBIAN_FRONTEND=$DEBIAN_FRONTEND" >>"$CALLS"
[ "$1" = install ] || exit 0
for p in "$@"; do case $p in
"#,
        );
        for (tool, package) in apt_tools() {
            let path = sandbox.bin.join(tool);
            apt.push_str(&format!(
                "  {package}) : >'{0}'; '{1}' +x '{0}' ;;\n",
                path.display(),
                chmod.display()
            ));
        }
        apt.push_str("esac; done");
        sandbox.shim("apt-get", &apt);

        let out = sandbox.run(&[]);
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert!(out.status.success(), "{stdout}{stderr}");
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines.len(), 1, "one line says what and why: {stdout}");
        assert!(lines[0].starts_with("scripts/test: installing "));
        for package in &packages {
            assert!(lines[0].contains(&format!("{package} (")), "{stdout}");
        }

        let mut expected = Vec::new();
        if with_sudo {
            expected.push("sudo -n true".to_string());
        }
        for step in [
            "update -qq".to_string(),
            format!("install -y -qq {}", packages.join(" ")),
        ] {
            if with_sudo {
                expected.push(format!(
                    "sudo DEBIAN_FRONTEND=noninteractive apt-get {step}"
                ));
            }
            expected.push(format!("apt-get {step}"));
            expected.push("DEBIAN_FRONTEND=noninteractive".into());
        }
        expected.push("cargo test --workspace".into());
        let calls: Vec<String> = sandbox
            .calls()
            .into_iter()
            .filter(|c| !c.starts_with("id "))
            .collect();
        assert_eq!(calls, expected, "with sudo: {with_sudo}");
    }
}

#[test]
fn with_every_tool_present_it_only_runs_the_suite_with_the_arguments_given() {
    let sandbox = Sandbox::new(1000); // no sudo, no apt-get: not needed
    sandbox.install_tools();
    let out = sandbox.run(&["metrics", "--", "--nocapture"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "");
    let cargo: Vec<String> = sandbox
        .calls()
        .into_iter()
        .filter(|c| c.starts_with("cargo"))
        .collect();
    assert_eq!(cargo, ["cargo test --workspace metrics -- --nocapture"]);
}

#[test]
fn python_tools_go_into_the_checkouts_venv_with_its_pip() {
    let sandbox = Sandbox::new(1000); // no sudo, no apt-get: not needed
    for (tool, _) in apt_tools() {
        sandbox.shim(tool, "");
    }
    let chmod = on_path("chmod").expect("chmod on PATH");
    // python3 has venv and ensurepip; `-m venv .venv` makes a pip that
    // records its calls and "installs" each package's tool.
    let mut pip = String::from("echo \"pip $*\" >>\"$CALLS\"\n");
    for (tool, _) in venv_tools() {
        pip.push_str(&format!(
            ": >.venv/bin/{tool}; '{}' +x .venv/bin/{tool}\n",
            chmod.display()
        ));
    }
    sandbox.shim(
        "python3",
        &format!(
            r#"[ "$1" = -c ] && exit 0
mkdir -p .venv/bin
cat >.venv/bin/pip <<'PIP'
#!{bash}
CALLS='{calls}'
{pip}PIP
'{chmod}' +x .venv/bin/pip"#,
            bash = sandbox.bin.join("bash").display(),
            calls = sandbox.dir.path().join("calls").display(),
            chmod = chmod.display(),
        ),
    );
    let mkdir = on_path("mkdir").expect("mkdir on PATH");
    let cat = on_path("cat").expect("cat on PATH");
    for (name, real) in [("mkdir", mkdir), ("cat", cat)] {
        std::os::unix::fs::symlink(real, sandbox.bin.join(name)).unwrap();
    }
    let out = sandbox.run(&[]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}{stderr}");
    let packages: Vec<&str> = venv_tools().iter().map(|(_, p)| *p).collect();
    for package in &packages {
        assert!(stdout.contains(&format!("{package} (")), "{stdout}");
    }
    let calls: Vec<String> = sandbox
        .calls()
        .into_iter()
        .filter(|c| !c.starts_with("id "))
        .collect();
    assert_eq!(
        calls,
        [
            "python3 -c import venv, ensurepip".to_string(),
            "python3 -m venv .venv".into(),
            format!("pip install --quiet {}", packages.join(" ")),
            "cargo test --workspace".into(),
        ]
    );
}
