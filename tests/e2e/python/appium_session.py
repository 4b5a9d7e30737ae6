"""Appium through the farm grid with the official Python client: session, find, screenshot, quit.

usage: appium_session.py GRID_URL APP_XML SITE
Prints "SESSION <id>" once the session runs, waits for a line on stdin, then quits.
"""
import sys

from appium import webdriver
from appium.options.common import AppiumOptions
from appium.webdriver.common.appiumby import AppiumBy

url, app, site = sys.argv[1], sys.argv[2], sys.argv[3]
options = AppiumOptions()
options.load_capabilities({
    "platformName": "Fake",
    "appium:automationName": "Fake",
    "appium:app": app,
    "farm:site": site,
})
driver = webdriver.Remote(url, options=options)
try:
    button = driver.find_element(AppiumBy.ID, "go")
    assert button.id, "the button has an element id"
    png = driver.get_screenshot_as_png()
    assert png[:8] == b"\x89PNG\r\n\x1a\n", png[:8]
    print(f"SESSION {driver.session_id}", flush=True)
    sys.stdin.readline()
finally:
    driver.quit()
print("DONE", flush=True)
