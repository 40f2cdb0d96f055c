package main

import "errors"

func runRelay(args []string) error {
	return errors.New("not implemented yet")
}
