"""The standard sample ERP: schema ``erp`` (NAV's Currency, Salesperson/Purchaser, Unit of
Measure, Customer, Contact, Resource and Item tables), deterministic sample data for it, and
the seven default integration table mappings that sync it with Dataverse."""
