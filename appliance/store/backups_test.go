package store

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestBackupRecords(t *testing.T) {
	ctx := context.Background()
	s := newTest(t)
	if _, err := s.LastBackup(ctx, "shop", BackupComplete); !errors.Is(err, ErrNotFound) {
		t.Fatalf("LastBackup on an empty store: %v", err)
	}
	if _, err := s.StartBackup(ctx, Backup{Appliance: "shop"}); err == nil {
		t.Error("a backup without name and path was recorded")
	}
	id1, err := s.StartBackup(ctx, Backup{Appliance: "shop", Name: "shop-1", Path: "/b/shop-1", Revision: 3})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.FinishBackup(ctx, id1, BackupComplete, 1234, ""); err != nil {
		t.Fatal(err)
	}
	id2, _ := s.StartBackup(ctx, Backup{Appliance: "shop", Name: "shop-2", Path: "/b/shop-2", Trigger: "schedule"})
	if err := s.FinishBackup(ctx, id2, BackupFailed, 0, "hook failed"); err != nil {
		t.Fatal(err)
	}
	if err := s.FinishBackup(ctx, id2, BackupRunning, 0, ""); err == nil {
		t.Error("FinishBackup accepted status running")
	}
	if err := s.FinishBackup(ctx, 999, BackupComplete, 0, ""); !errors.Is(err, ErrNotFound) {
		t.Errorf("FinishBackup of an unknown id: %v", err)
	}
	at := time.Date(2025, 5, 1, 10, 0, 0, 0, time.UTC)
	if err := s.SetBackupVerified(ctx, "/b/shop-1", at); err != nil {
		t.Fatal(err)
	}
	if err := s.SetBackupVerified(ctx, "/b/shop-2", at); !errors.Is(err, ErrNotFound) {
		t.Errorf("verifying a failed backup: %v", err)
	}
	last, err := s.LastBackup(ctx, "shop", BackupComplete)
	if err != nil || last.ID != id1 || last.Size != 1234 || last.Revision != 3 || !last.VerifiedAt.Equal(at) || last.Trigger != "manual" || last.FinishedAt.IsZero() {
		t.Errorf("LastBackup = %+v, %v", last, err)
	}
	all, err := s.Backups(ctx, "shop")
	if err != nil || len(all) != 2 || all[0].ID != id2 || all[0].Error != "hook failed" || all[0].Trigger != "schedule" {
		t.Errorf("Backups = %+v, %v", all, err)
	}
	if err := s.SetBackupPruned(ctx, "/b/shop-1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.LastBackup(ctx, "shop", BackupComplete); !errors.Is(err, ErrNotFound) {
		t.Errorf("pruned backup still the last complete one: %v", err)
	}
	if other, _ := s.Backups(ctx, "other"); len(other) != 0 {
		t.Errorf("other appliance: %+v", other)
	}
}
