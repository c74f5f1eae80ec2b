using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Time.Testing;
using Patterns.EventSourcing;
using Patterns.Hosting;
using Patterns.Storage;
using Patterns.Testing;

namespace Patterns.Core.Tests.Consuming;

public sealed class InboxPrunerTests
{
    [Fact]
    public async Task Pruner_RemovesHandledIdsOnceOlderThanTheRetention_AndKeepsNewerOnes()
    {
        var fake = new FakeTimeProvider();
        var time = new TimerTracker(fake);
        using var host = await TestHost.StartAsync(
            b =>
            {
                b.AddEventSourcing(_ => { });
                b.Services.Configure<PatternsOptions>(o => o.InboxRetention = TimeSpan.FromHours(2));
            },
            time,
            harness: false);
        var inbox = host.Services.GetRequiredService<IInboxStore>();
        await time.WaitForPendingTimersAsync(1).WaitAsync(TestHost.Wait); // the pruner's hourly pass is armed

        (await inbox.TryMarkHandledAsync("billing", "old")).Should().BeTrue();
        fake.Advance(TimeSpan.FromHours(1));
        (await inbox.TryMarkHandledAsync("billing", "new")).Should().BeTrue();
        fake.Advance(TimeSpan.FromHours(1)); // "old" is exactly 2 h old: kept
        await time.WaitForPendingTimersAsync(1).WaitAsync(TestHost.Wait);
        fake.Advance(TimeSpan.FromHours(1)); // "old" is 3 h old: removed; "new" is exactly 2 h old: kept

        var deadline = DateTime.UtcNow + TestHost.Wait;
        while (await inbox.ContainsAsync("billing", "old"))
        {
            DateTime.UtcNow.Should().BeBefore(deadline, "the pass after the retention removes the old id");
            await Task.Yield();
        }

        (await inbox.ContainsAsync("billing", "new")).Should().BeTrue();
        await host.StopAsync();
    }

    [Fact]
    public async Task StartAsync_NegativeRetention_FailsNamingTheOption()
    {
        var start = () => TestHost.StartAsync(b => b.Services.Configure<PatternsOptions>(o => o.InboxRetention = TimeSpan.FromMinutes(-1)));

        (await start.Should().ThrowAsync<Microsoft.Extensions.Options.OptionsValidationException>()).Which.Message.Should().Contain("PatternsOptions.InboxRetention must be positive");
    }
}
