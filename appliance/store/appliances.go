package store

import (
	"context"
	"fmt"
)

// Appliances returns the names of the appliances that have an active
// revision, sorted.
func (s *Store) Appliances(ctx context.Context) ([]string, error) {
	rows, err := s.db.QueryContext(ctx, "SELECT DISTINCT appliance FROM revisions WHERE status = 'active' ORDER BY appliance")
	if err != nil {
		return nil, fmt.Errorf("listing appliances: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			return nil, fmt.Errorf("listing appliances: %w", err)
		}
		out = append(out, name)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing appliances: %w", err)
	}
	return out, nil
}
