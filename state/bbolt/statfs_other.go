//go:build !unix

package bbolt

import "errors"

// freeSpace is not implemented here: Compact then needs CompactOptions.FreeSpace.
func freeSpace(string) (int64, error) {
	return 0, errors.New("free space unknown on this system")
}
