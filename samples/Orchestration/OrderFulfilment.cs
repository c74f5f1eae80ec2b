using System.Text.Json.Serialization;
using Patterns.Orchestration;

namespace OrchestrationSample;

/// <summary>
/// Every type the workflow histories record (the workflow's input and result, the activities' inputs and results, the
/// carrier's message, the query's answer), with its JSON code generated at compile time, so the sample also runs as a
/// NativeAOT executable, where JSON has no reflection. A registered type missing here fails the host's start with an error
/// that names it.
/// </summary>
[JsonSerializable(typeof(Order))]
[JsonSerializable(typeof(ShipmentConfirmed))]
[JsonSerializable(typeof(string))]
internal sealed partial class OrderJson : JsonSerializerContext;

public sealed record Order(string OrderId, string Sku, int Quantity, decimal Amount, string Card);

public sealed record ShipmentConfirmed(string OrderId, string TrackingNumber);

/// <summary>
/// Order fulfilment as a saga: reserve stock, charge the payment, ship, then wait for the carrier's confirmation. A failed
/// payment releases the stock; a confirmation that does not arrive in time refunds the payment, cancels the shipment and
/// releases the stock, in reverse order.
/// </summary>
public sealed class OrderFulfilment : Workflow<Order, string>
{
    public static readonly TimeSpan ConfirmationTimeout = TimeSpan.FromSeconds(5);

    private string _stage = "started";

    public override async Task<string> RunAsync(WorkflowContext context, Order order)
    {
        context.SetQueryHandler("stage", () => _stage);
        var saga = new CompensationScope();
        var noRetry = new ActivityOptions { Retry = RetryPolicy.None };
        try
        {
            await context.CallActivityAsync(nameof(Warehouse.Reserve), order);
            saga.Add(() => context.CallActivityAsync(nameof(Warehouse.Release), order));
            _stage = "stock reserved";

            var payment = await context.CallActivityAsync<string>(nameof(Payments.Charge), order, noRetry);
            saga.Add(() => context.CallActivityAsync(nameof(Payments.Refund), payment));
            _stage = "paid";

            await context.CallActivityAsync(nameof(Shipping.Ship), order);
            saga.Add(() => context.CallActivityAsync(nameof(Shipping.CancelShipment), order));
            _stage = "waiting for the carrier";
            context.SetCustomStatus(_stage);

            var confirmed = await context.WaitForMessageAsync<ShipmentConfirmed>(ConfirmationTimeout);
            _stage = "shipped";
            return $"shipped, tracking {confirmed.TrackingNumber}";
        }
        catch (Exception ex) when (ex is ActivityFailureException or TimeoutException)
        {
            _stage = "compensating";
            await saga.CompensateAsync();
            _stage = "compensated";
            return ex is TimeoutException ? "no shipping confirmation in time: compensated" : $"payment failed ({((ActivityFailureException)ex).ErrorMessage}): compensated";
        }
    }
}
