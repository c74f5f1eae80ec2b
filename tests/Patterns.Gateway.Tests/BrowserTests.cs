using GatewaySample;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Playwright;
using Patterns.PubSub;

namespace Patterns.Gateway.Tests;

/// <summary>The sample's live page in headless Debian Chromium, driven by Playwright (no browser is downloaded).</summary>
public sealed class BrowserTests
{
    private const string Chromium = "/usr/bin/chromium";

    [Fact]
    public async Task SamplePage_ShowsMessagesPublishedOnTheServer_OverSseAndWebSocket()
    {
        if (!File.Exists(Chromium))
        {
            Assert.Skip($"Debian chromium is not installed at {Chromium} (apt-get install -y chromium); CI installs it.");
        }

        await using var sample = await SampleApp.StartAsync();
        using var playwright = await Playwright.CreateAsync();
        await using var browser = await playwright.Chromium.LaunchAsync(new BrowserTypeLaunchOptions
        {
            ExecutablePath = Chromium,
            Headless = true,
            Args = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
        });
        var page = await browser.NewPageAsync();
        await page.GotoAsync(sample.Address + "/");
        await Assertions.Expect(page.Locator("#sse-state")).ToHaveTextAsync("open", new() { Timeout = 15_000 });
        await Assertions.Expect(page.Locator("#ws-state")).ToHaveTextAsync("open", new() { Timeout = 15_000 });

        var publisher = sample.Services.GetRequiredService<IPublisher>();
        await publisher.PublishAsync("news", new News("first from the server"), TestContext.Current.CancellationToken);
        await publisher.PublishAsync("news", new News("second from the server"), TestContext.Current.CancellationToken);

        await Assertions.Expect(page.Locator("#sse li")).ToHaveTextAsync(["first from the server", "second from the server"], new() { Timeout = 15_000 });
        await Assertions.Expect(page.Locator("#ws li")).ToHaveTextAsync(["first from the server", "second from the server"], new() { Timeout = 15_000 });
    }
}
