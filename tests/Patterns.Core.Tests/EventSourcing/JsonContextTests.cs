using System.Text.Json.Serialization;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Patterns.EventSourcing;
using Patterns.Storage;

namespace Patterns.Core.Tests.EventSourcing;

[JsonSerializable(typeof(AccountOpened))]
[JsonSerializable(typeof(Deposited))]
internal sealed partial class OnlyTwoEventsJson : JsonSerializerContext;

[JsonSerializable(typeof(AccountOpened))]
[JsonSerializable(typeof(Deposited))]
[JsonSerializable(typeof(Withdrawn))]
[JsonSerializable(typeof(BankAccount))]
[JsonSerializable(typeof(ProjectedBalance))]
internal sealed partial class CompleteBankJson : JsonSerializerContext;

public sealed record ProjectedBalance(decimal Amount);

public sealed class JsonContextTests
{
    [Fact]
    public async Task Start_StoredTypesMissingFromTheJsonContext_FailsNamingEachOne()
    {
        using var host = Build(OnlyTwoEventsJson.Default);

        var act = () => host.StartAsync();

        var thrown = (await act.Should().ThrowAsync<InvalidOperationException>()).Which;
        thrown.Message.Should().StartWith(
            "The JSON serializer has no metadata for 'Patterns.Core.Tests.EventSourcing.BankAccount', 'Patterns.Core.Tests.EventSourcing.ProjectedBalance', "
            + "'Patterns.Core.Tests.EventSourcing.Withdrawn', which the event store must serialize.");
        thrown.Message.Should().NotContain("Deposited").And.NotContain("AccountOpened").And.Contain("UseSystemTextJson(context)");
    }

    [Fact]
    public async Task Start_EveryStoredTypeInTheJsonContext_StartsAndAppends()
    {
        using var host = Build(CompleteBankJson.Default);
        await host.StartAsync();

        var store = host.Services.GetRequiredService<IEventStore>();
        var result = await store.AppendAsync("account-1", ExpectedVersion.NoStream, [new EventData(new AccountOpened("Ada")), new EventData(new Withdrawn(5m))]);

        result.Version.Should().Be(2);
        await host.StopAsync();
    }

    private static IHost Build(JsonSerializerContext context)
    {
        var builder = Host.CreateApplicationBuilder();
        builder.AddPatterns(p => p.UseSystemTextJson(context));
        builder.AddEventSourcing(es => es
            .AddEvent<AccountOpened>()
            .AddEvent<Deposited>()
            .AddEvent<Withdrawn>()
            .AddAggregate<BankAccount>(o => o.SnapshotEvery = 10)
            .AddDocumentProjection<ProjectedBalance>("projected-balances", "projected-balances", e => e.StreamId, (b, e) => b));
        return builder.Build();
    }
}
