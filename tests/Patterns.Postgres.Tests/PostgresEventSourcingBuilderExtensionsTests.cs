using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Patterns.EventSourcing;
using Patterns.Storage;

namespace Patterns.Postgres.Tests;

public sealed class PostgresEventSourcingBuilderExtensionsTests : PostgresTestBase
{
    [Fact]
    public async Task UsePostgres_Host_AppendsThroughTheFacadeAndRunsAnAsyncProjectionAsAHostedService()
    {
        var projected = new TaskCompletionSource<RecordedEvent>(TaskCreationOptions.RunContinuationsAsynchronously);
        using var host = BuildHost(es => es
            .UsePostgres(PostgresDatabase.ConnectionString, o => o.Schema = SchemaName)
            .AddEvent<Deposited>("deposited")
            .AddProjection("totals", (e, _, _) =>
            {
                projected.TrySetResult(e);
                return ValueTask.CompletedTask;
            }));
        await host.StartAsync();

        var store = host.Services.GetRequiredService<IEventStore>();
        var appended = await store.AppendAsync("account-1", ExpectedVersion.NoStream, new Deposited(12.5m));

        var seen = await projected.Task.WaitAsync(PostgresDatabase.Wait);
        seen.Data.Should().Be(new Deposited(12.5m));
        seen.Position.Should().Be(appended.LastPosition);
        var read = await store.ReadStreamAsync("account-1").ToListAsync();
        read.Should().ContainSingle().Which.EventType.Should().Be("deposited");

        var storage = host.Services.GetRequiredService<IEventStorage>();
        storage.Should().BeOfType<PostgresEventStore>().Which.Schema.Should().Be(SchemaName);
        host.Services.GetRequiredService<IInboxStore>().Should().BeSameAs(storage);
        host.Services.GetRequiredService<ICheckpointStore>().Should().BeSameAs(storage);
        (await PostgresDatabase.ScalarAsync<long>($"SELECT count(*) FROM \"{SchemaName}\".events")).Should().Be(1);

        await host.StopAsync();
    }

    [Fact]
    public async Task UsePostgres_InlineProjectionOnOtherStreams_AppendsToTheRestStillCommitInGroups()
    {
        // An inline projection on "a-" streams must not take group commit away from appends to "b-" streams.
        using var host = BuildHost(es => es
            .UsePostgres(PostgresDatabase.ConnectionString, o => o.Schema = SchemaName)
            .AddEvent<Deposited>("deposited")
            .AddProjection("a-totals", (e, context, ct) => context.Documents.UpsertAsync("a-totals", e.StreamId, "{}"u8.ToArray(), ct), o =>
            {
                o.Mode = ProjectionMode.Inline;
                o.StreamPrefix = "a-";
            }));
        await host.StartAsync();
        var facade = host.Services.GetRequiredService<IEventStore>();
        var store = (PostgresEventStore)host.Services.GetRequiredService<IEventStorage>();
        await facade.AppendAsync("b-blocker", ExpectedVersion.NoStream, new Deposited(1));

        await using var blocking = await HoldStreamRowAsync("b-blocker");
        var leader = facade.AppendAsync("b-blocker", ExpectedVersion.Any, new Deposited(2)).AsTask();
        var queued = Enumerable.Range(1, 3).Select(i => facade.AppendAsync($"b-{i}", ExpectedVersion.NoStream, new Deposited(i)).AsTask()).ToArray();

        store.QueuedAppends.Should().Be(3, "appends no inline projection selects wait for the next group");
        await blocking.CommitAsync();
        await leader.WaitAsync(PostgresDatabase.Wait);
        await Task.WhenAll(queued).WaitAsync(PostgresDatabase.Wait);
        store.Groups.Should().Be(1);

        await facade.AppendAsync("a-1", ExpectedVersion.NoStream, new Deposited(3));
        (await store.GetAsync("a-totals", "a-1")).Should().NotBeNull("an append the projection selects still runs it in its transaction");
        (await store.GetAsync("a-totals", "b-1")).Should().BeNull();
        await host.StopAsync();
    }

    [Fact]
    public async Task UsePostgres_InvalidOptions_FailsAtStartListingEveryProblem()
    {
        using var host = BuildHost(es => es.UsePostgres(PostgresDatabase.ConnectionString, o =>
        {
            o.Schema = "Not A Schema";
            o.PageSize = 0;
            o.PollInterval = TimeSpan.Zero;
        }));

        var act = () => host.StartAsync();

        var failures = (await act.Should().ThrowAsync<OptionsValidationException>()).Which.Failures;
        failures.Should().Contain(f => f.Contains("Schema must be lower-case", StringComparison.Ordinal))
            .And.Contain(f => f.Contains("PageSize", StringComparison.Ordinal))
            .And.Contain(f => f.Contains("PollInterval", StringComparison.Ordinal));
    }

    [Fact]
    public void UsePostgres_BlankConnectionString_Throws()
    {
        var services = new ServiceCollection();

        var act = () => services.AddEventSourcing(es => es.UsePostgres(" "));

        act.Should().Throw<ArgumentException>().WithParameterName("connectionString");
    }

    [Fact]
    public async Task UsePostgres_ContainerDisposedSynchronously_ClosesTheStore()
    {
        var services = new ServiceCollection();
        services.AddEventSourcing(es => es.UsePostgres(PostgresDatabase.ConnectionString, o => o.Schema = SchemaName));
        var provider = services.BuildServiceProvider();
        var store = (PostgresEventStore)provider.GetRequiredService<IEventStorage>();
        await store.AppendAsync("s", ExpectedVersion.NoStream, [TestEvents.One()]);

        provider.Dispose();

        var act = () => store.GetHeadPositionAsync().AsTask();
        await act.Should().ThrowAsync<ObjectDisposedException>();
    }

    private static IHost BuildHost(Action<EventSourcingBuilder> configure)
    {
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true, EnvironmentName = "Testing" });
        builder.Logging.ClearProviders();
        builder.AddEventSourcing(configure);
        return builder.Build();
    }

    private sealed record Deposited(decimal Amount);
}
