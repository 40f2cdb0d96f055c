package main

import "errors"

func runStatus(args []string) error {
	return errors.New("not implemented yet")
}
