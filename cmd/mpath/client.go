package main

import "errors"

func runClient(args []string) error {
	return errors.New("not implemented yet")
}
