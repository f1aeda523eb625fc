//! Scripts that make a batch run a well-behaved task of the cluster's own scheduler:
//! a Slurm job array (one array task per shard, throttled) with a merge job that
//! depends on it, and a Kubernetes indexed Job with its merge Job. pulmo brings no
//! scheduler of its own: each task is `pulmo batch ... --shard I/N`.

use std::path::Path;

/// What the scripts run and ask for.
#[derive(Debug, Clone)]
pub struct ClusterJob<'a> {
    /// The pulmo executable as the nodes see it.
    pub pulmo: &'a Path,
    pub manifest: &'a Path,
    pub out: &'a Path,
    /// `--tasks` as given (`lung,quantify`).
    pub tasks: &'a str,
    /// `--device` (auto, cpu, cuda).
    pub device: &'a str,
    /// Number of shards (array tasks, indexed Job completions).
    pub shards: usize,
    /// At most this many array tasks at once (`%K`; 0: no limit).
    pub array_max: usize,
    pub cpus_per_task: usize,
    pub gpus_per_task: usize,
    /// Memory per task, in Slurm's and Kubernetes' notation (`8G`, `8Gi`).
    pub mem: &'a str,
    pub partition: Option<&'a str>,
    /// Container image (Kubernetes only).
    pub image: &'a str,
}

/// Quotes a word for a POSIX shell.
pub fn shell_quote(word: &str) -> String {
    if !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-=:,%@+".contains(c))
    {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

fn q(p: &Path) -> String {
    shell_quote(&p.display().to_string())
}

impl ClusterJob<'_> {
    /// The shard command with `index` as given (a shell expression).
    fn shard_command(&self, index: &str) -> String {
        format!(
            "{} batch {} -o {} --tasks {} --device {} --shard \"{index}/{}\"",
            q(self.pulmo),
            q(self.manifest),
            q(self.out),
            shell_quote(self.tasks),
            shell_quote(self.device),
            self.shards
        )
    }

    fn slurm_header(&self, name: &str, log: &str) -> String {
        let mut s = format!(
            "#!/bin/bash\n#SBATCH --job-name={name}\n#SBATCH --output={}\n",
            q(&self.out.join("slurm").join(log))
        );
        if let Some(p) = self.partition {
            s += &format!("#SBATCH --partition={}\n", shell_quote(p));
        }
        s
    }

    /// The sbatch script of the array: one task per shard.
    pub fn slurm_array(&self) -> String {
        let throttle = if self.array_max > 0 {
            format!("%{}", self.array_max)
        } else {
            String::new()
        };
        let mut s = self.slurm_header("pulmo-batch", "shard-%A_%a.out");
        s += &format!(
            "#SBATCH --array=0-{}{throttle}\n#SBATCH --cpus-per-task={}\n#SBATCH --mem={}\n",
            self.shards.saturating_sub(1),
            self.cpus_per_task.max(1),
            shell_quote(self.mem)
        );
        if self.gpus_per_task > 0 {
            s += &format!("#SBATCH --gpus-per-task={}\n", self.gpus_per_task);
        }
        s += "set -euo pipefail\n";
        s += &format!("exec {}\n", self.shard_command("${SLURM_ARRAY_TASK_ID}"));
        s
    }

    /// The sbatch script of the merge (submitted with `--dependency=afterok:<array>`).
    pub fn slurm_merge(&self) -> String {
        let mut s = self.slurm_header("pulmo-merge", "merge-%j.out");
        s += "#SBATCH --cpus-per-task=1\nset -euo pipefail\n";
        s += &format!("exec {} batch merge {}\n", q(self.pulmo), q(self.out));
        s
    }

    /// A Kubernetes indexed Job (shard from `JOB_COMPLETION_INDEX`) and the merge Job
    /// (apply it when the first completes: `kubectl wait --for=condition=complete`).
    /// The manifest and OUT must be on a volume mounted at the same path in every pod
    /// (the `data` PersistentVolumeClaim below).
    pub fn kubernetes(&self) -> String {
        let cmd = self.shard_command("${JOB_COMPLETION_INDEX}");
        let gpu = if self.gpus_per_task > 0 {
            format!("\n                nvidia.com/gpu: {}", self.gpus_per_task)
        } else {
            String::new()
        };
        let yaml_str = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
        let job = |name: &str, completions: usize, parallelism: usize, command: &str| {
            format!(
                "apiVersion: batch/v1
kind: Job
metadata:
  name: {name}
spec:
  completions: {completions}
  parallelism: {parallelism}
  completionMode: Indexed
  backoffLimitPerIndex: 2
  template:
    spec:
      restartPolicy: Never
      containers:
        - name: pulmo
          image: {image}
          command: [\"/bin/bash\", \"-c\", {command}]
          resources:
            limits:
                cpu: {cpus}
                memory: {mem}{gpu}
          volumeMounts:
            - name: data
              mountPath: /data
      volumes:
        - name: data
          persistentVolumeClaim:
            claimName: pulmo-data
",
                image = yaml_str(self.image),
                command = yaml_str(command),
                cpus = self.cpus_per_task.max(1),
                mem = yaml_str(self.mem),
            )
        };
        let parallelism = if self.array_max > 0 {
            self.array_max.min(self.shards)
        } else {
            self.shards
        };
        let merge = format!("{} batch merge {}", q(self.pulmo), q(self.out));
        format!(
            "# pulmo batch on Kubernetes: the shards as an indexed Job, then the merge.\n\
             # kubectl apply -f this file's first document; when it completes\n\
             # (kubectl wait --for=condition=complete job/pulmo-batch), apply the second.\n{}---\n{}",
            job("pulmo-batch", self.shards, parallelism, &cmd),
            job("pulmo-merge", 1, 1, &merge)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job<'a>(out: &'a Path) -> ClusterJob<'a> {
        ClusterJob {
            pulmo: Path::new("/opt/pulmo/bin/pulmo"),
            manifest: Path::new("/data/my studies.csv"),
            out,
            tasks: "lung,quantify",
            device: "auto",
            shards: 8,
            array_max: 3,
            cpus_per_task: 2,
            gpus_per_task: 1,
            mem: "8G",
            partition: Some("gpu"),
            image: "registry.example/pulmo:1",
        }
    }

    #[test]
    fn slurm_scripts_run_one_shard_per_array_task_and_merge() {
        let out = Path::new("/data/out");
        let j = job(out);
        let a = j.slurm_array();
        assert!(a.starts_with("#!/bin/bash\n"));
        for line in [
            "#SBATCH --array=0-7%3",
            "#SBATCH --cpus-per-task=2",
            "#SBATCH --mem=8G",
            "#SBATCH --gpus-per-task=1",
            "#SBATCH --partition=gpu",
            "#SBATCH --output=/data/out/slurm/shard-%A_%a.out",
        ] {
            assert!(a.lines().any(|l| l == line), "{line} in\n{a}");
        }
        assert!(
            a.contains(
                "exec /opt/pulmo/bin/pulmo batch '/data/my studies.csv' -o /data/out \
                 --tasks lung,quantify --device auto --shard \"${SLURM_ARRAY_TASK_ID}/8\""
            ),
            "{a}"
        );
        let m = j.slurm_merge();
        assert!(
            m.contains("exec /opt/pulmo/bin/pulmo batch merge /data/out"),
            "{m}"
        );
        let k = j.kubernetes();
        assert_eq!(k.matches("completionMode: Indexed").count(), 2);
        assert!(k.contains("completions: 8\n  parallelism: 3"), "{k}");
        assert!(
            k.contains("--shard \\\"${JOB_COMPLETION_INDEX}/8\\\""),
            "{k}"
        );
        assert!(k.contains("nvidia.com/gpu: 1"));
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}
