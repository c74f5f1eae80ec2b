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
