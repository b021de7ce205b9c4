package natskv

// SetReadHook sets the function called between the read of an open index entry and
// the update of its read time, for the test's duration.
func SetReadHook(cleanup func(func()), fn func(id string)) {
	testHookRead = fn
	cleanup(func() { testHookRead = nil })
}
