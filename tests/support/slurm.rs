//! A real one-node Slurm cluster on loopback for a test: munged with a key of its own,
//! slurmctld and slurmd (Debian 12's `slurmctld`, `slurmd`, `slurm-client`, `munge`; `cargo
//! xtask ci` installs them) with a generated `slurm.conf`, free ports and every file under one
//! temporary directory. Started by the test, stopped when it is dropped; nothing listens beyond
//! 127.0.0.1. slurmd needs root, as CI has.

#![allow(dead_code)] // Each test file uses a different subset.

use std::io::Read;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub struct Cluster {
    dir: tempfile::TempDir,
    daemons: Vec<Child>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn(program: &str, args: &[&str], log: &Path) -> Child {
    let log = std::fs::File::create(log).unwrap();
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start {program} ({e}): `apt-get install slurmctld slurmd slurm-client \
                 munge` (`cargo xtask ci` installs them)"
            )
        })
}

impl Cluster {
    pub fn start() -> Cluster {
        let uid = Command::new("id").arg("-u").output().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&uid.stdout).trim(),
            "0",
            "the Slurm tests start slurmd, which needs root (CI runs as root)"
        );
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for sub in ["munge", "state", "spool", "log"] {
            std::fs::create_dir(root.join(sub)).unwrap();
        }
        let mut key = vec![0u8; 1024];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut key))
            .unwrap();
        let key_file = root.join("munge/munge.key");
        std::fs::write(&key_file, key).unwrap();
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o400)).unwrap();
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
        let socket = root.join("munge/munge.sock");
        let path = |p: &Path| p.to_str().unwrap().to_owned();
        let mut daemons = vec![spawn(
            "munged",
            &[
                "--foreground",
                "--force",
                &format!("--socket={}", path(&socket)),
                &format!("--key-file={}", path(&key_file)),
                &format!("--log-file={}", path(&root.join("log/munged.log"))),
                &format!("--pid-file={}", path(&root.join("munge/munged.pid"))),
                &format!("--seed-file={}", path(&root.join("munge/seed"))),
            ],
            &root.join("log/munged.out"),
        )];
        wait(Duration::from_secs(20), "munged's socket", || {
            socket.exists()
        });
        let host = String::from_utf8_lossy(&Command::new("hostname").output().unwrap().stdout)
            .trim()
            .to_owned();
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let conf = format!(
            "ClusterName=textrec-test\n\
             SlurmctldHost={host}(127.0.0.1)\n\
             SlurmctldPort={ctld}\n\
             SlurmdPort={slurmd}\n\
             SlurmUser=root\n\
             AuthType=auth/munge\n\
             AuthInfo=socket={socket}\n\
             CredType=cred/munge\n\
             StateSaveLocation={root}/state\n\
             SlurmdSpoolDir={root}/spool/%n\n\
             SlurmctldPidFile={root}/slurmctld.pid\n\
             SlurmdPidFile={root}/slurmd.pid\n\
             SlurmctldLogFile={root}/log/slurmctld.log\n\
             SlurmdLogFile={root}/log/slurmd.log\n\
             ProctrackType=proctrack/linuxproc\n\
             TaskPlugin=task/none\n\
             SelectType=select/cons_tres\n\
             SelectTypeParameters=CR_Core_Memory\n\
             SchedulerType=sched/backfill\n\
             MpiDefault=none\n\
             ReturnToService=2\n\
             JobCompType=jobcomp/none\n\
             AccountingStorageType=accounting_storage/none\n\
             MinJobAge=600\n\
             NodeName=node1 NodeHostname={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=4000 State=UNKNOWN\n\
             PartitionName=test Nodes=node1 Default=YES MaxTime=INFINITE State=UP\n",
            ctld = free_port(),
            slurmd = free_port(),
            socket = path(&socket),
            root = path(root),
        );
        let conf_file = root.join("slurm.conf");
        std::fs::write(&conf_file, conf).unwrap();
        let conf = path(&conf_file);
        daemons.push(spawn(
            "slurmctld",
            &["-D", "-i", "-f", &conf],
            &root.join("log/slurmctld.out"),
        ));
        daemons.push(spawn(
            "slurmd",
            &["-D", "-N", "node1", "-f", &conf],
            &root.join("log/slurmd.out"),
        ));
        let cluster = Cluster { dir, daemons };
        wait(Duration::from_secs(60), "the Slurm node to be idle", || {
            let out = cluster.command("sinfo").args(["-h", "-o", "%T"]).output();
            out.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "idle")
        });
        cluster
    }

    pub fn conf(&self) -> PathBuf {
        self.dir.path().join("slurm.conf")
    }

    /// `program` (sbatch, squeue, scontrol, or anything that runs them) talking to this cluster.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new(program);
        command.env("SLURM_CONF", self.conf()).stdin(Stdio::null());
        command
    }

    /// Waits until job `id` (and every task of an array job) has ended.
    pub fn wait_for_job(&self, id: &str, limit: Duration) -> Output {
        wait(limit, &format!("Slurm job {id} to end"), || {
            let out = self
                .command("squeue")
                .args(["-h", "-j", id])
                .output()
                .unwrap();
            out.status.success() && out.stdout.is_empty()
        });
        self.command("scontrol")
            .args(["show", "job", "-o", id])
            .output()
            .unwrap()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for daemon in self.daemons.iter_mut().rev() {
            let _ = daemon.kill();
            let _ = daemon.wait();
        }
    }
}

fn wait(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
