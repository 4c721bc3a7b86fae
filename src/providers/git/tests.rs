//! The pack reader and the push reading against packs the real `git` makes.

use std::path::Path;
use std::process::{Command, Stdio};

use super::*;

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// What `git` writes to stdout, as bytes.
fn raw(dir: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new("git").args(args).current_dir(dir).output().unwrap();
    assert!(out.status.success());
    out.stdout
}

/// What the broker would learn of `commit` from the git host.
fn known_of(dir: &Path, commit: &str) -> KnownCommit {
    let tree = git(dir, &["rev-parse", &format!("{commit}^{{tree}}")]);
    let tree_data = raw(dir, &["cat-file", "tree", &tree]);
    KnownCommit {
        tree: id(ObjectFormat::Sha1, &tree),
        dirs: workflow_dirs(ObjectFormat::Sha1, &tree_data).unwrap(),
        tree_data,
    }
}

/// `git pack-objects --stdout` of the revisions given on its input.
fn pack_of(dir: &Path, flags: &[&str], revs: &str) -> Vec<u8> {
    let mut child = Command::new("git")
        .args(["pack-objects", "--stdout", "--revs"])
        .args(flags)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), revs.as_bytes()).unwrap();
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    out.stdout
}

fn write(dir: &Path, path: &str, text: &str) {
    let path = dir.join(path);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// A repository with enough similar trees and commits that git deltifies them.
fn repository(format: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    git(d, &["init", "-q", "-b", "main", &format!("--object-format={format}")]);
    for i in 0..60 {
        write(
            d,
            &format!("src/file{i:02}.txt"),
            &format!("{}\n", "line of text ".repeat(40)),
        );
    }
    write(d, ".github/workflows/ci.yml", "on: push\n");
    git(d, &["add", "-A"]);
    git(d, &["commit", "-qm", "base"]);
    for i in 0..8 {
        write(d, &format!("src/file{i:02}.txt"), &format!("changed {i}\n"));
        git(d, &["commit", "-qam", &format!("change {i}")]);
    }
    dir
}

fn id(format: ObjectFormat, hex_text: &str) -> Oid {
    format.parse_hex(hex_text.as_bytes()).unwrap()
}

fn objects_of(dir: &Path, kind: &str) -> Vec<String> {
    let listed = git(dir, &["rev-list", "--objects", "--all"]);
    listed
        .lines()
        .map(|l| l.split(' ').next().unwrap().to_owned())
        .filter(|o| git(dir, &["cat-file", "-t", o]) == kind)
        .collect()
}

#[test]
fn every_commit_and_tree_of_a_deltified_pack_is_read_with_offset_and_ref_deltas() {
    for (format, name) in [(ObjectFormat::Sha1, "sha1"), (ObjectFormat::Sha256, "sha256")] {
        let repo = repository(name);
        let d = repo.path();
        let (commits, trees) = (objects_of(d, "commit"), objects_of(d, "tree"));
        for flags in [&["--delta-base-offset"][..], &[]] {
            let bytes = pack_of(d, &[&["--all", "--window=50", "--depth=50"], flags].concat(), "");
            let pack = pack::read(format, &bytes, &PackLimits::default(), &HashMap::new()).unwrap();
            assert_eq!(pack.unresolved, 0, "{name} {flags:?}");
            assert_eq!(pack.commits.len(), commits.len(), "{name} {flags:?}");
            assert_eq!(pack.trees.len(), trees.len(), "{name} {flags:?}");
            for c in &commits {
                let commit = &pack.commits[&id(format, c)];
                assert_eq!(
                    commit.tree,
                    id(format, &git(d, &["rev-parse", &format!("{c}^{{tree}}")]))
                );
            }
        }
        // The pack really holds deltas of trees, so the delta path ran.
        let bytes = pack_of(d, &["--all", "--window=50", "--depth=50", "--delta-base-offset"], "");
        std::fs::write(d.join("p.pack"), &bytes).unwrap();
        git(d, &["index-pack", "-o", "p.idx", "p.pack"]);
        let verified = git(d, &["verify-pack", "-v", "p.idx"]);
        assert!(
            verified
                .lines()
                .any(|l| l.contains(" tree ") && l.split_whitespace().count() > 5),
            "{verified}"
        );
    }
}

#[test]
fn a_thin_pack_reads_what_it_can_and_leaves_outside_bases_unresolved() {
    let repo = repository("sha1");
    let d = repo.path();
    let old = git(d, &["rev-parse", "HEAD~1"]);
    let new = git(d, &["rev-parse", "HEAD"]);
    let bytes = pack_of(d, &["--thin", "--delta-base-offset"], &format!("{new}\n^{old}\n"));
    let pack = pack::read(ObjectFormat::Sha1, &bytes, &PackLimits::default(), &HashMap::new()).unwrap();
    let format = ObjectFormat::Sha1;
    assert!(pack.commits.contains_key(&id(format, &new)));
    assert!(pack.unresolved > 0, "git sent a thin pack with bases outside it");
}

#[test]
fn a_thin_packs_root_tree_is_read_against_the_parents_tree_learned() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    git(d, &["init", "-q", "-b", "main"]);
    for i in 0..80 {
        write(d, &format!("root{i:02}.txt"), &format!("{i}\n"));
    }
    write(d, ".github/workflows/ci.yml", "on: push\n");
    git(d, &["add", "-A"]);
    git(d, &["commit", "-qm", "base"]);
    let base = git(d, &["rev-parse", "HEAD"]);
    write(d, "root00.txt", "changed\n");
    git(d, &["commit", "-qam", "change"]);
    let tip = git(d, &["rev-parse", "HEAD"]);
    let tree = id(ObjectFormat::Sha1, &git(d, &["rev-parse", "HEAD^{tree}"]));
    let thin = pack_of(d, &["--thin"], &format!("{tip}\n^{base}\n"));
    let alone = pack::read(ObjectFormat::Sha1, &thin, &PackLimits::default(), &HashMap::new()).unwrap();
    assert!(!alone.trees.contains_key(&tree), "git sent the root tree whole");
    let known = HashMap::from([(id(ObjectFormat::Sha1, &base), known_of(d, &base))]);
    let external = known.values().map(|k| (k.tree.clone(), k.tree_data.clone())).collect();
    let with = pack::read(ObjectFormat::Sha1, &thin, &PackLimits::default(), &external).unwrap();
    assert!(with.trees.contains_key(&tree));

    let body = push_body(&[(&base, &tip, "refs/heads/work")], &thin);
    let (got, learn) = scopes(&spec(&[]), &body, &HashMap::new());
    assert_eq!(got, ["contents:write", "workflows:write"]);
    assert_eq!(learn, BTreeSet::from([id(ObjectFormat::Sha1, &base)]));
    assert_eq!(scopes(&spec(&[]), &body, &known).0, ["contents:write"]);
}

#[test]
fn limits_checksums_and_truncation_refuse_the_pack() {
    let repo = repository("sha1");
    let bytes = pack_of(repo.path(), &["--all", "--delta-base-offset", "--depth=50"], "");
    let read = |b: &[u8], limits: PackLimits| pack::read(ObjectFormat::Sha1, b, &limits, &HashMap::new());
    let limits = PackLimits::default();
    assert!(matches!(
        read(
            &bytes,
            PackLimits {
                max_objects: 3,
                ..limits
            }
        ),
        Err(GitError::TooLarge {
            what: "objects in the pack",
            ..
        })
    ));
    assert!(matches!(
        read(
            &bytes,
            PackLimits {
                max_object_bytes: 100,
                ..limits
            }
        ),
        Err(GitError::TooLarge { .. })
    ));
    assert!(matches!(
        read(
            &bytes,
            PackLimits {
                max_inflated_bytes: 1000,
                ..limits
            }
        ),
        Err(GitError::TooLarge {
            what: "bytes inflated from the pack",
            ..
        })
    ));
    assert!(matches!(
        read(
            &bytes,
            PackLimits {
                max_delta_depth: 0,
                ..limits
            }
        ),
        Err(GitError::TooLarge {
            what: "deltas in one chain",
            ..
        })
    ));
    let mut flipped = bytes.clone();
    flipped[40] ^= 1;
    assert!(matches!(read(&flipped, limits), Err(GitError::Malformed(_))));
    // Cut short, with a trailer that matches what is left.
    let cut = &bytes[..bytes.len() / 2];
    let mut resealed = cut.to_vec();
    resealed.extend_from_slice(ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, cut).as_ref());
    assert!(matches!(read(&resealed, limits), Err(GitError::Malformed(_))));
    assert!(read(b"PACK", limits).is_err());
}

/// A push body as `git send-pack` writes it: commands, a flush, the pack.
fn push_body(updates: &[(&str, &str, &str)], pack: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    for (i, (old, new, name)) in updates.iter().enumerate() {
        let caps = if i == 0 {
            "\0report-status side-band-64k agent=git/2"
        } else {
            ""
        };
        body.extend(pkt_line(format!("{old} {new} {name}{caps}").as_bytes()));
    }
    body.extend_from_slice(b"0000");
    body.extend_from_slice(pack);
    body
}

fn push_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/x-git-receive-pack-request"),
    );
    h
}

fn spec(protected: &[&str]) -> GitSpec {
    let tiers = super::super::ProviderKind::Github
        .pack()
        .scopes
        .iter()
        .map(|(n, s)| (n.clone(), s.tier))
        .collect();
    let mut spec = GitSpec::new(&tiers);
    spec.protect(&protected.iter().map(|p| (*p).to_owned()).collect::<Vec<_>>());
    spec
}

fn scopes(spec: &GitSpec, body: &[u8], known: &HashMap<Oid, KnownCommit>) -> (Vec<String>, BTreeSet<Oid>) {
    let (ops, learn) = spec
        .operations(Route::Push, "acme/api", &push_headers(), Some(body), known)
        .unwrap();
    (ops.into_iter().map(|o| o.scope.unwrap()).collect(), learn)
}

#[test]
fn a_push_is_read_as_its_ref_movements_and_its_change_to_github() {
    let repo = repository("sha1");
    let d = repo.path();
    let z = "0".repeat(40);
    let base = git(d, &["rev-parse", "HEAD~1"]);
    let tip = git(d, &["rev-parse", "HEAD"]);
    let spec = spec(&["main", "release/*"]);
    let none = HashMap::new();

    // A fast-forward whose parent is outside the pack: the parent's
    // `.github` is unknown until learned; learned, the push is plain.
    let thin = pack_of(d, &["--thin", "--delta-base-offset"], &format!("{tip}\n^{base}\n"));
    let ff = push_body(&[(&base, &tip, "refs/heads/feature")], &thin);
    let (got, learn) = scopes(&spec, &ff, &none);
    assert_eq!(got, ["contents:write", "workflows:write"]);
    assert_eq!(learn, BTreeSet::from([id(ObjectFormat::Sha1, &base)]));
    let github = git(d, &["rev-parse", &format!("{base}:.github")]);
    let learned = |dir: &str| {
        let mut known = known_of(d, &base);
        known.dirs = vec![(b"40000".to_vec(), b".github".to_vec(), id(ObjectFormat::Sha1, dir))];
        HashMap::from([(id(ObjectFormat::Sha1, &base), known)])
    };
    assert_eq!(scopes(&spec, &ff, &learned(&github)).0, ["contents:write"]);
    // Had the parent another `.github`, the push changes it.
    assert_eq!(
        scopes(&spec, &ff, &learned(&tip)).0,
        ["contents:write", "workflows:write"]
    );
    // The same update to a protected branch needs the protected scope.
    let to_main = push_body(&[(&base, &tip, "refs/heads/main")], &thin);
    assert_eq!(scopes(&spec, &to_main, &learned(&github)).0, ["branch:protected"]);
    let to_release = push_body(&[(&z, &tip, "refs/heads/Release/1.0/x")], &thin);
    assert_eq!(scopes(&spec, &to_release, &learned(&github)).0, ["branch:protected"]);

    // Backwards, sideways or unprovable: a rewrite. Deleting: destructive.
    let empty = pack_of(d, &[], &format!("{base}\n^{base}\n"));
    let back = push_body(&[(&tip, &base, "refs/heads/feature")], &empty);
    assert_eq!(scopes(&spec, &back, &none).0, ["branch:delete"]);
    let delete = push_body(&[(&tip, &z, "refs/heads/feature")], b"");
    assert_eq!(scopes(&spec, &delete, &none).0, ["branch:delete"]);
    let moved_tag = push_body(&[(&base, &tip, "refs/tags/v1")], &thin);
    assert_eq!(scopes(&spec, &moved_tag, &learned(&github)).0, ["branch:delete"]);
    let grandparent = git(d, &["rev-parse", "HEAD~2"]);
    let skipping = push_body(&[(&grandparent, &tip, "refs/heads/feature")], &thin);
    assert_eq!(scopes(&spec, &skipping, &learned(&github)).0, ["branch:delete"]);

    // The whole history from its root: `.github` arrives with the root
    // commit, which has no parent to compare with.
    let full = pack_of(d, &["--all", "--delta-base-offset"], "");
    let create = push_body(&[(&z, &tip, "refs/heads/new")], &full);
    let (got, learn) = scopes(&spec, &create, &none);
    assert_eq!(got, ["contents:write", "workflows:write"]);
    assert!(learn.is_empty());
    // A branch created at a commit the upstream already has: nothing new.
    let at_old = push_body(&[(&z, &base, "refs/heads/new")], &empty);
    assert_eq!(scopes(&spec, &at_old, &none).0, ["contents:write"]);
    // The probe git sends before a large push.
    assert_eq!(scopes(&spec, b"0000", &none).0, ["contents:write"]);
}

#[test]
fn a_change_under_github_needs_the_workflow_scope_and_others_do_not() {
    let repo = repository("sha1");
    let d = repo.path();
    let base = git(d, &["rev-parse", "HEAD"]);
    let spec = spec(&[]);
    for (path, touches) in [
        (".github/workflows/ci.yml", true),
        (".github/actions/x/action.yml", true),
        (".GitHub/workflows/x.yml", true),
        ("docs/.github/x", false),
        ("src/file00.txt", false),
    ] {
        git(d, &["checkout", "-q", "-B", "work", &base]);
        write(d, path, "on: workflow_dispatch\n");
        git(d, &["add", "-A"]);
        git(d, &["commit", "-qm", path]);
        let tip = git(d, &["rev-parse", "HEAD"]);
        let wants = if touches {
            vec!["contents:write", "workflows:write"]
        } else {
            vec!["contents:write"]
        };
        // Against its parent only: the parent's `.github` learned.
        let thin = pack_of(d, &["--thin"], &format!("{tip}\n^{base}\n"));
        let body = push_body(&[(&base, &tip, "refs/heads/work")], &thin);
        let known = HashMap::from([(id(ObjectFormat::Sha1, &base), known_of(d, &base))]);
        assert_eq!(scopes(&spec, &body, &known).0, wants, "{path}");
    }
}

#[test]
fn git_paths_are_recognised_by_route_and_repository_and_rest_paths_are_not() {
    let seg = |p: &str| {
        p.split('/')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let get = |p: &str, q: Option<&str>| recognise(&Method::GET, &seg(p), q);
    let post = |p: &str| recognise(&Method::POST, &seg(p), None);
    assert_eq!(
        get("/acme/api.git/info/refs", Some("service=git-upload-pack"))
            .unwrap()
            .unwrap(),
        (Route::FetchRefs, "acme/api".to_owned())
    );
    assert_eq!(
        get("/acme/api/info/refs", Some("service=git-receive-pack"))
            .unwrap()
            .unwrap(),
        (Route::PushRefs, "acme/api".to_owned())
    );
    assert_eq!(post("/acme/api.git/git-upload-pack").unwrap().unwrap().0, Route::Fetch);
    assert_eq!(
        post("/Acme/Api/git-receive-pack").unwrap().unwrap(),
        (Route::Push, "Acme/Api".to_owned())
    );
    for (path, query) in [
        ("/acme/api/info/refs", None),
        ("/acme/api/info/refs", Some("service=git-upload-pack&x=1")),
        ("/acme/api/info/refs", Some("service=git-upload-archive")),
        ("/acme/.git/info/refs", Some("service=git-upload-pack")),
    ] {
        assert!(get(path, query).unwrap().is_err(), "{path} {query:?}");
    }
    // Other methods, the dumb protocol's files and every REST path: not git.
    assert!(get("/acme/api/git-receive-pack", None).is_none());
    assert!(get("/acme/api.git/HEAD", None).is_none());
    assert!(get("/acme/api.git/objects/info/packs", None).is_none());
    assert!(get("/repos/acme/api", None).is_none());
    assert!(get("/repos/acme/api/git/refs", None).is_none());
}

#[test]
fn protected_patterns_match_across_slashes_and_case() {
    assert!(glob("main", "main"));
    assert!(glob("main", "MAIN"));
    assert!(!glob("main", "main2"));
    assert!(glob("release/*", "release/1.0"));
    assert!(glob("release/*", "release/1.0/hotfix"));
    assert!(!glob("release/*", "releases/1"));
    assert!(glob("*-prod", "eu-prod"));
    assert!(glob("a*b*c", "aXbYc"));
    assert!(!glob("a*b*c", "aXc"));
    assert!(glob("*", "anything"));
}
