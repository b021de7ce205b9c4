package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"
)

// testPG is the throwaway PostgreSQL server of this package's tests, started once
// by TestMain. err says why there is none; tests that need it fail with it.
var testPG struct {
	socketDir string
	port      int
	err       error
	dbs       atomic.Int32
}

const installHint = "install the PostgreSQL server with: apt-get update && apt-get install -y postgresql"

func TestMain(m *testing.M) {
	stop, err := startPostgres()
	testPG.err = err
	code := m.Run()
	if stop != nil {
		stop()
	}
	os.Exit(code)
}

// pgBinDir finds the directory holding initdb and pg_ctl: the newest
// /usr/lib/postgresql/*/bin (Debian), else `pg_config --bindir`, else PATH.
func pgBinDir() (string, error) {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	slices.SortFunc(dirs, func(a, b string) int { // numerically: 9 < 15 < 17
		va, _ := strconv.Atoi(filepath.Base(filepath.Dir(a)))
		vb, _ := strconv.Atoi(filepath.Base(filepath.Dir(b)))
		return vb - va
	})
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		dirs = append(dirs, strings.TrimSpace(string(out)))
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		dirs = append(dirs, filepath.Dir(p))
	}
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err != nil {
			continue
		}
		if _, err := os.Stat(filepath.Join(d, "pg_ctl")); err == nil {
			return d, nil
		}
	}
	return "", fmt.Errorf("PostgreSQL server binaries (initdb, pg_ctl) not found in /usr/lib/postgresql/*/bin, `pg_config --bindir` or PATH; %s", installHint)
}

// startPostgres initialises a cluster in a temporary directory and starts it on a
// free port, listening only on a unix socket in that directory. As root it runs the
// server as the postgres system user, which the server requires.
func startPostgres() (stop func(), err error) {
	bin, err := pgBinDir()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "audit-trail-pg-")
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			os.RemoveAll(dir)
		}
	}()
	data, sock, logFile := filepath.Join(dir, "data"), filepath.Join(dir, "sock"), filepath.Join(dir, "server.log")
	if err := os.Mkdir(sock, 0o700); err != nil {
		return nil, err
	}
	var as []string
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("running as root, the server needs the postgres system user (%v); %s", err, installHint)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		for _, d := range []string{dir, sock} {
			if err := os.Chown(d, uid, gid); err != nil {
				return nil, fmt.Errorf("postgres test directory %s: %w", d, err)
			}
		}
		runuser, err := exec.LookPath("runuser")
		if err != nil {
			return nil, fmt.Errorf("running as root, the server is started with runuser: %w", err)
		}
		as = []string{runuser, "-u", "postgres", "--"}
	}
	pg := func(name string, args ...string) error {
		argv := append(append(slices.Clone(as), filepath.Join(bin, name)), args...)
		out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%s: %w\n%s", strings.Join(argv, " "), err, out)
		}
		return nil
	}
	if err := pg("initdb", "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	if err := pg("pg_ctl", "-D", data, "-l", logFile, "-w", "-t", "60", "-o",
		fmt.Sprintf("-p %d -k %s -c listen_addresses='' -c fsync=off -c synchronous_commit=off -c full_page_writes=off", port, sock),
		"start"); err != nil {
		log, _ := os.ReadFile(logFile)
		return nil, fmt.Errorf("%w\nserver log:\n%s", err, log)
	}
	testPG.socketDir, testPG.port = sock, port
	return func() {
		if err := pg("pg_ctl", "-D", data, "-m", "immediate", "-w", "stop"); err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
		os.RemoveAll(dir)
	}, nil
}

// testDB is a database of the test server set up for audit-trail: owner is the
// connection string of the role owning the tables, writer that of the role granted
// INSERT and SELECT only.
type testDB struct {
	owner, writer         string
	ownerRole, writerRole string
}

// newDatabase creates a database for t, owned by a role of its own, and runs
// `audit-trail setup` in it as that owner for a writer role of its own. It fails t
// when there is no server.
func newDatabase(t *testing.T) testDB {
	t.Helper()
	if testPG.err != nil {
		t.Fatalf("PostgreSQL test server: %v", testPG.err)
	}
	n := testPG.dbs.Add(1)
	name := fmt.Sprintf("audit_%d", n)
	db := testDB{ownerRole: fmt.Sprintf("audit_owner_%d", n), writerRole: fmt.Sprintf("audit_writer_%d", n)}
	admin := dsn("postgres", "postgres")
	conn, err := pgx.Connect(t.Context(), admin)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	for _, q := range []string{
		"CREATE ROLE " + db.ownerRole + " LOGIN",
		"CREATE ROLE " + db.writerRole + " LOGIN",
		"CREATE DATABASE " + name + " OWNER " + db.ownerRole,
	} {
		if _, err := conn.Exec(t.Context(), q); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		conn, err := pgx.Connect(context.Background(), admin)
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close(context.Background())
		for _, q := range []string{"DROP DATABASE " + name + " WITH (FORCE)", "DROP ROLE " + db.writerRole, "DROP ROLE " + db.ownerRole} {
			if _, err := conn.Exec(context.Background(), q); err != nil {
				t.Error(err)
			}
		}
	})
	db.owner, db.writer = dsn(name, db.ownerRole), dsn(name, db.writerRole)
	pool, err := openDB(t.Context(), db.owner)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if err := setupSchema(t.Context(), pool, db.writerRole); err != nil {
		t.Fatal(err)
	}
	return db
}

func dsn(db, user string) string {
	return fmt.Sprintf("host=%s port=%d user=%s dbname=%s sslmode=disable", testPG.socketDir, testPG.port, user, db)
}
