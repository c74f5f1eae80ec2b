using System.Text.Json.Serialization;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Patterns.Orchestration.Tests;

public sealed record Shipment(string Id);

public sealed record Delivered(string ShipmentId);

public sealed record Quote(decimal Price);

public sealed class ShippingActivities
{
    public Task<Quote> PriceAsync(Shipment shipment) => Task.FromResult(new Quote(shipment.Id.Length));

    public Task Notify() => Task.CompletedTask;
}

public sealed class ShipmentWorkflow : Workflow<Shipment, string>
{
    public override async Task<string> RunAsync(WorkflowContext context, Shipment input)
    {
        var quote = await context.CallActivityAsync<Quote>("Price", input);
        await context.CallActivityAsync("Notify");
        return $"{input.Id}: {quote.Price}";
    }
}

public sealed record Approval(string By);

/// <summary>Waits for an approval signal; answers a query and an update with a quote.</summary>
public sealed class ApprovalWorkflow : Workflow<Shipment, string>
{
    private Quote _quote = new(0);

    public override async Task<string> RunAsync(WorkflowContext context, Shipment input)
    {
        context.SetQueryHandler("quote", () => _quote);
        context.SetUpdateHandler<Shipment, Quote>("reprice", shipment => Task.FromResult(_quote = new Quote(shipment.Id.Length * 10)));
        var approval = await context.WaitForSignalAsync<Approval>("approve");
        return $"{input.Id} approved by {approval.By} at {_quote.Price}";
    }
}

[JsonSerializable(typeof(Shipment))]
[JsonSerializable(typeof(string))]
[JsonSerializable(typeof(Quote))]
[JsonSerializable(typeof(Delivered))]
[JsonSerializable(typeof(Approval))]
internal sealed partial class ApprovalJson : JsonSerializerContext;

/// <summary>Knows the workflow's input and result, but neither the activity's result nor the correlated message.</summary>
[JsonSerializable(typeof(Shipment))]
[JsonSerializable(typeof(string))]
internal sealed partial class PartialShippingJson : JsonSerializerContext;

[JsonSerializable(typeof(Shipment))]
[JsonSerializable(typeof(string))]
[JsonSerializable(typeof(Quote))]
[JsonSerializable(typeof(Delivered))]
internal sealed partial class CompleteShippingJson : JsonSerializerContext;

public sealed class JsonContextTests
{
    [Fact]
    public async Task Start_RegisteredTypesMissingFromTheJsonContext_FailsNamingEachOne()
    {
        using var host = Build(PartialShippingJson.Default);

        var act = () => host.StartAsync();

        var thrown = (await act.Should().ThrowAsync<OptionsValidationException>()).Which;
        thrown.Failures.Should().ContainSingle().Which.Should().StartWith(
            "The JSON serializer has no metadata for 'Patterns.Orchestration.Tests.Delivered', 'Patterns.Orchestration.Tests.Quote', which workflow histories must record")
            .And.Contain("UseSystemTextJson(context)");
    }

    [Fact]
    public async Task Start_EveryRegisteredTypeInTheJsonContext_StartsAndRunsTheWorkflow()
    {
        using var host = Build(CompleteShippingJson.Default);
        await host.StartAsync();
        var client = host.Services.GetRequiredService<IWorkflowClient>();

        await client.StartAsync(nameof(ShipmentWorkflow), "s-1", new Shipment("abc"));

        (await client.GetResultAsync<string>("s-1").WaitAsync(TestHost.Wait)).Should().Be("abc: 3");
        await host.StopAsync();
    }

    [Fact]
    public async Task Start_DeclaredSignalTypeMissingFromTheJsonContext_FailsNamingTheTypeAndTheWorkflow()
    {
        using var host = Build(CompleteShippingJson.Default, withApprovals: true);

        var act = () => host.StartAsync();

        var thrown = (await act.Should().ThrowAsync<OptionsValidationException>()).Which;
        thrown.Failures.Should().Equal(
            "Workflow 'ApprovalWorkflow' declares signal 'approve' with payload type 'Patterns.Orchestration.Tests.Approval', for which the JSON "
            + "serializer has no metadata. Add [JsonSerializable(typeof(...))] for each to the JsonSerializerContext passed with "
            + "UseSystemTextJson(context) (NativeAOT and trimmed apps cannot serialize by reflection).");
    }

    [Fact]
    public async Task Start_DeclaredUpdateAndQueryTypesMissing_AreEachNamedWithTheirRole()
    {
        using var host = Build(PartialShippingJson.Default, withApprovals: true);

        var act = () => host.StartAsync();

        var thrown = (await act.Should().ThrowAsync<OptionsValidationException>()).Which;
        thrown.Failures.Should().HaveCount(2);
        thrown.Failures.Should().ContainSingle(f => f.StartsWith("Workflow 'ApprovalWorkflow' declares ", StringComparison.Ordinal)).Which.Should().StartWith(
            "Workflow 'ApprovalWorkflow' declares signal 'approve' with payload type 'Patterns.Orchestration.Tests.Approval', "
            + "update 'reprice' with result type 'Patterns.Orchestration.Tests.Quote', query 'quote' with result type 'Patterns.Orchestration.Tests.Quote', "
            + "for which the JSON serializer has no metadata.");
    }

    [Fact]
    public async Task Start_EveryDeclaredTypeInTheJsonContext_StartsAndSignalsUpdatesAndQueriesWork()
    {
        using var host = Build(ApprovalJson.Default, withApprovals: true);
        await host.StartAsync();
        var client = host.Services.GetRequiredService<IWorkflowClient>();

        await client.StartAsync(nameof(ApprovalWorkflow), "a-1", new Shipment("abc"));
        (await client.UpdateAsync<Shipment, Quote>("a-1", "reprice", new Shipment("abcd")).WaitAsync(TestHost.Wait)).Should().Be(new Quote(40));
        (await client.QueryAsync<Quote>("a-1", "quote").WaitAsync(TestHost.Wait)).Should().Be(new Quote(40));
        await client.SignalAsync("a-1", "approve", new Approval("ops"));

        (await client.GetResultAsync<string>("a-1").WaitAsync(TestHost.Wait)).Should().Be("abc approved by ops at 40");
        await host.StopAsync();
    }

    [Fact]
    public async Task Start_SameSignalDeclaredTwiceWithDifferentTypes_FailsNamingBothTypes()
    {
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true });
        builder.Logging.ClearProviders();
        builder.AddPatterns(p => p.UseInMemory().UseSystemTextJson(ApprovalJson.Default));
        builder.AddOrchestration(o => o
            .AddWorkflow<ShipmentWorkflow>(null) // the name-only overload, unambiguous with a null name
            .AddWorkflow<ApprovalWorkflow>(w => w.Signal<Approval>("approve").Signal<Shipment>("approve").Query<Quote>("quote")));
        using var host = builder.Build();

        var act = () => host.StartAsync();

        var thrown = (await act.Should().ThrowAsync<OptionsValidationException>()).Which;
        thrown.Failures.Should().Contain(
            "Workflow 'ApprovalWorkflow' declares signal 'approve' with different payload types "
            + "('Patterns.Orchestration.Tests.Approval', 'Patterns.Orchestration.Tests.Shipment'); declare each name once.");
    }

    private static IHost Build(JsonSerializerContext context, bool withApprovals = false)
    {
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true });
        builder.Logging.ClearProviders();
        builder.AddPatterns(p => p.UseInMemory().UseSystemTextJson(context));
        builder.AddOrchestration(o => o
            .AddWorkflow<ShipmentWorkflow>()
            .AddActivity<ShippingActivities, Shipment, Quote>("Price", static (a, shipment, _) => a.PriceAsync(shipment))
            .AddActivity<ShippingActivities, object, object?>("Notify", static async (a, _, _) =>
            {
                await a.Notify();
                return null;
            })
            .CorrelateMessage<Delivered>("deliveries", static d => d.ShipmentId));
        if (withApprovals)
        {
            builder.AddOrchestration(o => o.AddWorkflow<ApprovalWorkflow>(w => w
                .Signal<Approval>("approve")
                .Update<Shipment, Quote>("reprice")
                .Query<Quote>("quote")));
        }

        return builder.Build();
    }
}
