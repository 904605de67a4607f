//! Child processes of stages: a command runs in a process group of its own, and nothing it
//! starts outlives it or the engine.
//!
//! `PR_SET_PDEATHSIG` alone kills only the direct child when the engine dies; what that child
//! started in the background (`sleep 300 &`, a data loader's workers) would go on writing into a
//! staging directory that the next run deletes. A process group collects them all, and a reaper
//! kills the group when the engine dies: the kernel gives no signal to a group whose creator
//! died, and the engine itself cannot act after `kill -9`.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitStatus, Stdio};

/// Waits for its standard input to reach end-of-file, which happens only when the engine (the
/// sole holder of the pipe's write end) has exited, however it died; then kills its own group.
const REAPER_SCRIPT: &str = "read -r _; kill -s KILL 0";

/// Runs `command` to completion in a process group of its own and returns its exit status.
///
/// When the command exits, whatever it left running in its group is killed, so a finished
/// stage leaves nothing behind. If the engine dies first (even by `kill -9`), the group's reaper
/// kills the whole group; the command also gets `SIGKILL` from the kernel itself
/// (`PR_SET_PDEATHSIG`). A process that puts itself in another group (`setsid`) escapes both.
pub fn run_in_process_group(command: &mut Command) -> io::Result<ExitStatus> {
    // The reaper leads the group, so the group exists before the command joins it and its id
    // cannot be reused while the group has a member.
    let mut reaper = Command::new("sh")
        .arg("-c")
        .arg(REAPER_SCRIPT)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()?;
    let group = reaper.id() as libc::pid_t;
    command.process_group(group);
    // SAFETY: prctl is async-signal-safe, as code between fork and exec must be.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let status = command.status();
    // SAFETY: kill(2) of the group this function created; the reaper is a member until now, so
    // the id still names that group.
    unsafe { libc::kill(-group, libc::SIGKILL) };
    reaper.wait()?;
    status
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn what_a_command_starts_in_the_background_ends_with_it() {
        let (mut reader, writer) = io::pipe().unwrap();
        let mut command = Command::new("sh");
        command.arg("-c").arg("sleep 300 &").stdout(writer);
        let status = run_in_process_group(&mut command).unwrap();
        assert!(status.success());
        // The background `sleep` holds the pipe's write end: end-of-file means it is gone.
        drop(command);
        let (done_tx, done_rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut rest = Vec::new();
            let _ = done_tx.send(reader.read_to_end(&mut rest).map(|_| ()));
        });
        let eof = done_rx.recv_timeout(Duration::from_secs(10));
        assert!(
            matches!(eof, Ok(Ok(()))),
            "the background `sleep 300` outlived its command: {eof:?}"
        );
    }
}
