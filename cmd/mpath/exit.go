package main

import "errors"

func runExit(args []string) error {
	return errors.New("not implemented yet")
}
